//! `GET /api/openapi.json`: the served OpenAPI 3.1 document describes what fulfilld
//! really answers and really sends. Real answers and real captured webhook bodies are
//! validated against the schemas the document names, so the two cannot drift apart.

use std::time::{Duration, Instant};

use fulfilld::domain::Status;
use fulfilld::sandbox::RefundSpec;
use jsonschema::Validator;
use serde_json::{Value, json};

use crate::checkout_api::{TOKEN, api_app, post};
use crate::disputes::{ebook_and_tee, settled};
use crate::helpers::{TestApp, backends, sign, spawn_app, spawn_app_with, unix_now};
use crate::refunds::deliver_many;
use crate::warehouse::Warehouse;

/// The document a running fulfilld serves.
struct Document(Value);

impl Document {
    async fn served(app: &TestApp) -> Self {
        let response = app.get("/api/openapi.json").await;
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        Self(response.json().await.expect("JSON"))
    }

    /// A validator for the schema at `pointer` in the document, its `$ref`s resolved in
    /// the document itself.
    fn validator(&self, pointer: &str) -> Validator {
        assert!(
            self.0.pointer(pointer).is_some(),
            "the document has nothing at {pointer}"
        );
        let mut root = self.0.clone();
        closed(&mut root);
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
        root["$ref"] = json!(format!("#{fragment}"));
        jsonschema::draft202012::new(&root)
            .unwrap_or_else(|error| panic!("the schema at {pointer} does not build: {error}"))
    }

    /// The schema of `method path`'s JSON answer with `status`.
    fn response(&self, method: &str, path: &str, status: u16) -> Validator {
        let status = status.to_string();
        self.validator(&pointer(&[
            "paths",
            path,
            method,
            "responses",
            &status,
            "content",
            "application/json",
            "schema",
        ]))
    }

    /// The schema of `method path`'s JSON request body.
    fn request(&self, method: &str, path: &str) -> Validator {
        self.validator(&pointer(&[
            "paths",
            path,
            method,
            "requestBody",
            "content",
            "application/json",
            "schema",
        ]))
    }

    /// The schema of the body POSTed as webhook `name`.
    fn webhook(&self, name: &str) -> Validator {
        self.validator(&pointer(&[
            "webhooks",
            name,
            "post",
            "requestBody",
            "content",
            "application/json",
            "schema",
        ]))
    }
}

/// A JSON pointer to `parts`, each escaped.
fn pointer(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|part| format!("/{}", part.replace('~', "~0").replace('/', "~1")))
        .collect()
}

#[track_caller]
fn assert_valid(validator: &Validator, instance: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{instance} does not match the document: {errors:#?}"
    );
}

/// Every `$ref` anywhere in `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get("$ref") {
                found.push(target);
            }
            object.values().for_each(|value| refs(value, found));
        }
        Value::Array(values) => values.iter().for_each(|value| refs(value, found)),
        _ => {}
    }
}

#[actix_web::test]
async fn the_document_is_openapi_3_1_and_describes_every_json_route_and_both_webhooks() {
    let app = spawn_app(&backends()[0]).await;
    let Document(document) = Document::served(&app).await;

    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        document["openapi"]
    );
    assert_eq!(document["info"]["title"], "fulfilld");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    for (path, method) in [
        ("/api/checkout-sessions/{id}", "get"),
        ("/api/checkout-sessions", "post"),
        ("/api/access/{token}", "get"),
        ("/webhook", "post"),
        ("/api/openapi.json", "get"),
    ] {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is not described"
        );
    }
    assert_eq!(document["paths"].as_object().unwrap().len(), 5);
    for webhook in ["shipping", "access"] {
        let headers: Vec<&str> = document["webhooks"][webhook]["post"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("webhook {webhook} is not described"))
            .iter()
            .filter(|parameter| parameter["in"] == "header")
            .map(|parameter| parameter["name"].as_str().unwrap())
            .collect();
        for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            assert!(headers.contains(&header), "{webhook}: {headers:?}");
        }
    }

    let mut ids: Vec<&str> = ["paths", "webhooks"]
        .iter()
        .flat_map(|part| document[part].as_object().unwrap().values())
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|operation| operation["operationId"].as_str().expect("an operationId"))
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operationIds are unique: {ids:?}");

    // Creating a checkout needs API_TOKEN as a bearer token (or the shop's CSRF token).
    let create = &document["paths"]["/api/checkout-sessions"]["post"];
    assert!(
        create["security"]
            .as_array()
            .unwrap()
            .contains(&json!({"api_token": []})),
        "{create}"
    );
    let scheme = &document["components"]["securitySchemes"]["api_token"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert!(document["paths"]["/api/checkout-sessions/{id}"]["get"]["security"].is_null());

    // Every reference points at something in the document.
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(found.len() > 10, "{found:?}");
    for target in found {
        let local = target.strip_prefix('#').expect("a local reference");
        assert!(document.pointer(local).is_some(), "{target} resolves");
    }
}

#[actix_web::test]
async fn a_fulfilled_then_refunded_order_and_what_its_warehouse_and_access_system_were_sent_match_the_document()
 {
    for backend in backends() {
        let warehouse = Warehouse::start(&[]);
        let access = Warehouse::start(&[]);
        let app = spawn_app_with(&backend, |settings| {
            settings.effects.shipping_webhook_url = Some(warehouse.url().to_owned());
            settings.effects.access_webhook_url = Some(access.url().to_owned());
            settings.effects.outbound_webhook_secret =
                Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        })
        .await;
        let document = Document::served(&app).await;
        let outcome_path = "/api/checkout-sessions/{id}";
        let outcome_schema = document.response("get", outcome_path, 200);
        let session = app.stripe.add_session(ebook_and_tee());

        // Stripe's delivery is acknowledged as described.
        let paid = app
            .stripe
            .event_payload("evt_paid", "checkout.session.completed", &session);
        let answer = app.post_webhook(paid.clone(), Some(sign(&paid))).await;
        assert_eq!(answer.status(), 200);
        let answer: Value = answer.json().await.expect("JSON");
        assert_valid(&document.response("post", "/webhook", 200), &answer);
        let ignored = app
            .deliver("evt_other", "customer.created", &session)
            .await
            .json::<Value>()
            .await
            .expect("JSON");
        assert_eq!(ignored["ignored"], true, "{ignored}");
        assert_valid(&document.response("post", "/webhook", 200), &ignored);
        let refused = app.post_webhook(paid.clone(), None).await;
        assert_eq!(refused.status(), 400);
        let refused: Value = refused.json().await.expect("JSON");
        assert_valid(&document.response("post", "/webhook", 400), &refused);

        // The outcome, with a download link and a shipment.
        settled(&app, &session, Status::Fulfilled).await;
        let fulfilled: Value = app
            .get(&format!("/api/checkout-sessions/{session}"))
            .await
            .json()
            .await
            .expect("JSON");
        assert_eq!(fulfilled["access"][0]["status"], "active", "{fulfilled}");
        assert_eq!(fulfilled["shipment"]["status"], "submitted", "{fulfilled}");
        assert_valid(&outcome_schema, &fulfilled);

        // The download server's question.
        let url = fulfilled["access"][0]["url"].as_str().expect("a link");
        let token = url.split("token=").nth(1).expect("a token");
        let link: Value = app
            .get(&format!("/api/access/{token}"))
            .await
            .json()
            .await
            .expect("JSON");
        assert_eq!(link["status"], "active", "{link}");
        assert_valid(&document.response("get", "/api/access/{token}", 200), &link);
        let forged = app.get("/api/access/not-a-token").await;
        assert_eq!(forged.status(), 400);
        let forged: Value = forged.json().await.expect("JSON");
        assert_valid(
            &document.response("get", "/api/access/{token}", 400),
            &forged,
        );

        // Refunded in full: access revoked, the shipment cancelled.
        let refund = RefundSpec {
            id: "re_openapi",
            session: &session,
            amount: 3400,
            status: "succeeded",
            items: None,
        };
        let refunded = app
            .stripe
            .refund_payload("evt_re", "refund.created", &refund, unix_now());
        deliver_many(&app, &[refunded], 1).await;
        settled(&app, &session, Status::Refunded).await;
        let shipped = warehouse.wait_for(2).await;
        let refunded = cancelled(&app, &session).await;
        assert_eq!(refunded["access"][0]["status"], "revoked", "{refunded}");
        assert_valid(&outcome_schema, &refunded);

        // What the warehouse and the access system were really sent.
        let shipping = document.webhook("shipping");
        let kinds: Vec<_> = shipped.iter().map(|r| r.body["type"].clone()).collect();
        assert_eq!(kinds, ["shipment.requested", "shipment.cancel_requested"]);
        for request in &shipped {
            assert!(request.webhook.iter().all(Option::is_some), "{request:?}");
            assert_valid(&shipping, &request.body);
        }
        let notices = access.wait_for(2).await;
        let kinds: Vec<_> = notices.iter().map(|r| r.body["type"].clone()).collect();
        assert_eq!(
            kinds,
            ["access.granted", "access.revoked"],
            "on {backend:?}"
        );
        for notice in &notices {
            assert!(notice.webhook.iter().all(Option::is_some), "{notice:?}");
            assert_valid(&document.webhook("access"), &notice.body);
        }

        // The schemas are strict enough to catch a body that drifted.
        let mut drifted = fulfilled.clone();
        drifted.as_object_mut().unwrap().remove("status");
        assert!(!outcome_schema.is_valid(&drifted), "no status");
        let mut drifted = fulfilled.clone();
        drifted["status"] = json!("shipped");
        assert!(!outcome_schema.is_valid(&drifted), "an unknown status");
        let mut drifted = fulfilled.clone();
        drifted["shipment"]["items"][0]
            .as_object_mut()
            .unwrap()
            .remove("sku");
        assert!(
            !outcome_schema.is_valid(&drifted),
            "an item without its sku"
        );
        let mut drifted = shipped[0].body.clone();
        drifted["type"] = json!("shipment.lost");
        assert!(!shipping.is_valid(&drifted), "an unknown shipment type");
        // A field the document does not name is drift too: renamed, or added unsaid.
        let mut drifted = fulfilled.clone();
        drifted["amount_paid"] = json!(5000);
        assert!(!outcome_schema.is_valid(&drifted), "a field not described");
        let mut drifted = notices[0].body.clone();
        drifted["items"][0]["url"] = json!("https://example.com");
        assert!(
            !document.webhook("access").is_valid(&drifted),
            "an access item with a field not described"
        );
    }
}

/// Waits until the session's JSON outcome shows its shipment cancelled, and returns it.
async fn cancelled(app: &TestApp, session: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcome: Value = app
            .get(&format!("/api/checkout-sessions/{session}"))
            .await
            .json()
            .await
            .expect("JSON");
        if outcome["shipment"]["status"] == "cancelled" {
            return outcome;
        }
        assert!(Instant::now() < deadline, "never cancelled: {outcome}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[actix_web::test]
async fn the_checkout_apis_answers_match_the_document() {
    for backend in backends() {
        let app = api_app(&backend, 100).await;
        let document = Document::served(&app).await;
        let path = "/api/checkout-sessions";
        let schema = |status| document.response("post", path, status);

        let cart = json!({
            "line_items": [{"price": "price_mug", "quantity": 1}],
            "email": "jenny.rosen@example.com"
        });
        assert_valid(&document.request("post", path), &cart);
        let (status, created) = post(&app, Some(TOKEN), &cart.to_string()).await;
        assert_eq!(status, 201, "{created}");
        assert_valid(&schema(201), &created);

        let unknown = json!({"line_items": [{"price": "price_nope", "quantity": 1}]});
        let (status, invalid) = post(&app, Some(TOKEN), &unknown.to_string()).await;
        assert_eq!(status, 400, "{invalid}");
        assert_eq!(invalid["error"]["field"], "line_items[0].price");
        assert_valid(&schema(400), &invalid);
        let extra = json!({"line_items": [{"price": "price_mug", "quantity": 1, "colour": "red"}]});
        assert!(!document.request("post", path).is_valid(&extra));

        // A body over the limit gets the same kind of answer, naming what is wrong.
        let padding = "x".repeat(17 * 1024);
        let large =
            json!({"line_items": [{"price": "price_mug", "quantity": 1}], "email": padding});
        let (status, too_large) = post(&app, Some(TOKEN), &large.to_string()).await;
        assert_eq!(status, 413, "{too_large}");
        assert_eq!(too_large["error"]["code"], "too_large");
        assert_valid(&schema(413), &too_large);

        let (status, unauthorized) = post(&app, None, &cart.to_string()).await;
        assert_eq!(status, 401, "{unauthorized}");
        assert_valid(&schema(401), &unauthorized);

        app.execute("UPDATE inventory SET stock = 1 WHERE sku = 'MUG'")
            .await;
        let (status, sold_out) = post(&app, Some(TOKEN), &cart.to_string()).await;
        assert_eq!(status, 409, "{sold_out}");
        assert_eq!(sold_out["error"]["price"], "price_mug");
        assert_valid(&schema(409), &sold_out);
        let mut drifted = sold_out.clone();
        drifted["error"].as_object_mut().unwrap().remove("price");
        assert!(
            !schema(409).is_valid(&drifted),
            "a sold-out answer must name the price"
        );
    }
}

/// Closes every object schema of the document: a property it does not describe makes a
/// body invalid, so a field renamed or added without the document saying so is caught.
fn closed(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            if object.contains_key("properties")
                && !object.contains_key("additionalProperties")
                && !object.contains_key("unevaluatedProperties")
            {
                object.insert("unevaluatedProperties".to_owned(), Value::Bool(false));
            }
            object.values_mut().for_each(closed);
        }
        Value::Array(items) => items.iter_mut().for_each(closed),
        _ => {}
    }
}
