//! Traces exported over OTLP/HTTP to a collector running in the test: a delivery's
//! trace, continued from Stripe's `traceparent`, reaches the session's actor, the Stripe
//! call, the record's transaction and every effect it enqueued.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use fulfilld::domain::SessionId;
use fulfilld::sandbox::{SessionSpec, StripeDouble};
use serde_json::Value;

use crate::faults::connect;
use crate::helpers::{Process, backends, drained, sign};
use crate::warehouse::Warehouse;

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP collector that keeps every span it is sent as JSON.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    service_names: Arc<Mutex<HashSet<String>>>,
}

impl Collector {
    fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service_names = Arc::new(Mutex::new(HashSet::new()));
        let (kept, names) = (Arc::clone(&spans), Arc::clone(&service_names));
        let server = HttpServer::new(move || {
            let (kept, names) = (Arc::clone(&kept), Arc::clone(&names));
            App::new().route(
                "/v1/traces",
                web::post().to(move |body: web::Bytes| {
                    let (kept, names) = (Arc::clone(&kept), Arc::clone(&names));
                    async move {
                        let export: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                        receive(&export, &kept, &names);
                        HttpResponse::Ok().json(serde_json::json!({}))
                    }
                }),
            )
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("collector binds");
        let url = format!("http://{}", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        Collector {
            url,
            spans,
            service_names,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("spans").clone()
    }

    /// Waits until `done` holds of the spans received.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "the collector never received {what}; it has {:#?}",
                spans
                    .iter()
                    .map(|span| (&span.name, &span.trace_id))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Keeps the spans of one `ExportTraceServiceRequest` in OTLP's JSON encoding.
fn receive(export: &Value, kept: &Mutex<Vec<Span>>, names: &Mutex<HashSet<String>>) {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        for attribute in resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if attribute["key"] == "service.name" {
                let name = text(&attribute["value"]["stringValue"]);
                names.lock().expect("names").insert(name);
            }
        }
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let attributes = span["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|attribute| {
                        let value = &attribute["value"];
                        let value = match &value["stringValue"] {
                            Value::String(text) => text.clone(),
                            _ => value.to_string(),
                        };
                        (text(&attribute["key"]), value)
                    })
                    .collect();
                kept.lock().expect("spans").push(Span {
                    trace_id: text(&span["traceId"]).to_ascii_lowercase(),
                    span_id: text(&span["spanId"]).to_ascii_lowercase(),
                    parent_span_id: text(&span["parentSpanId"]).to_ascii_lowercase(),
                    name: text(&span["name"]),
                    attributes,
                });
            }
        }
    }
}

/// POSTs a signed delivery of `body` to `/webhook` from `client`, in the caller's trace
/// `traceparent`; it must be acknowledged.
async fn deliver_traced(client: &reqwest::Client, address: &str, body: String, traceparent: &str) {
    let answer = client
        .post(format!("{address}/webhook"))
        .header("Content-Type", "application/json")
        .header("Stripe-Signature", sign(&body))
        .header("traceparent", traceparent)
        .body(body)
        .send()
        .await
        .expect("webhook request sent");
    assert_eq!(answer.status(), 200);
}

fn of_session<'a>(spans: &'a [Span], session: &str) -> impl Iterator<Item = &'a Span> {
    spans
        .iter()
        .filter(move |span| span.attributes.get("session.id").map(String::as_str) == Some(session))
}

#[actix_web::test]
async fn a_delivery_s_trace_follows_it_through_the_actor_stripe_the_record_and_every_effect() {
    for backend in backends() {
        let collector = Collector::start();
        let stripe = StripeDouble::start().expect("Stripe double starts");
        let database = backend.fresh_database().await;
        // The receipt, the shipment and the access notice: three effects.
        let warehouse = Warehouse::start(&[]);
        let access = Warehouse::start(&[]);
        // Traces begun here are never exported (a ratio of 0); one a caller sampled is.
        let env = [
            ("SHIPPING_WEBHOOK_URL", warehouse.url().to_owned()),
            ("ACCESS_WEBHOOK_URL", access.url().to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("OTEL_TRACES_SAMPLER_ARG", "0".to_owned()),
            // Trace context is continued from the load balancer alone: 127.0.0.1 here.
            ("TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
        ];
        let process = Process::start_with(&database.url, stripe.url(), &env).await;
        let client = reqwest::Client::new();
        let db = connect(&database.url).await;

        // A delivery from an address that is not a trusted proxy, asking to be sampled: its
        // trace context is ignored, so its trace is begun here, and not sampled.
        let unsampled =
            stripe.add_session(SessionSpec::paid(&[("Mug", 1200, 1)]).with_prices(&["price_mug"]));
        let body = stripe.event_payload("evt_unsampled", "checkout.session.completed", &unsampled);
        let outsider = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .build()
            .expect("client");
        let sampled = format!(
            "00-{:032x}-{:016x}-01",
            fastrand::u128(1..),
            fastrand::u64(1..)
        );
        deliver_traced(&outsider, &process.address, body, &sampled).await;
        drained(&db).await;

        // Stripe's delivery, in the trace of the caller's span.
        let session = stripe.add_session(
            SessionSpec::paid(&[("Mug", 1200, 1), ("E-book", 900, 1)])
                .with_prices(&["price_mug", "price_ebook"]),
        );
        let trace_id = format!("{:032x}", fastrand::u128(1..));
        let caller = format!("{:016x}", fastrand::u64(1..));
        let body = stripe.event_payload("evt_traced", "checkout.session.completed", &session);
        let traceparent = format!("00-{trace_id}-{caller}-01");
        deliver_traced(&client, &process.address, body, &traceparent).await;
        drained(&db).await;
        let id = SessionId::parse(&session).expect("id");
        let effects = db.effects_of(&id).await.expect("database answers");
        assert!(effects.len() >= 3, "{effects:?} on {backend:?}");

        // Every effect's attempt is exported once the effect is done.
        let spans = collector
            .wait_for("a span for each effect of the traced session", |spans| {
                of_session(spans, &session)
                    .filter(|span| span.name == "effect")
                    .count()
                    >= effects.len()
            })
            .await;
        let traced: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
        let by_id: HashMap<&str, &Span> = traced.iter().map(|s| (s.span_id.as_str(), *s)).collect();
        let named = |name: &'static str| traced.iter().filter(move |span| span.name == name);

        // The request continues the caller's span; everything else hangs below it.
        let request = named("HTTP request").next().expect("the request's span");
        assert_eq!(request.parent_span_id, caller, "on {backend:?}");
        assert_eq!(
            request.attributes.get("http.route").map(String::as_str),
            Some("/webhook")
        );
        for span in &traced {
            if span.span_id == request.span_id {
                continue;
            }
            let mut at = *span;
            let mut steps = 0;
            while at.span_id != request.span_id {
                at = by_id.get(at.parent_span_id.as_str()).unwrap_or_else(|| {
                    panic!("{} is not below the request on {backend:?}", span.name)
                });
                steps += 1;
                assert!(steps < 50, "a cycle of parents");
            }
        }
        // The Stripe call: the gateway's span, whichever question the event left open.
        assert!(
            ["checkout_session", "line_items", "line_items_if_needed"]
                .iter()
                .any(|name| named(name).next().is_some()),
            "no Stripe call in the trace on {backend:?}"
        );
        for name in ["accept", "event", "process", "fulfill_checkout", "record"] {
            assert!(
                named(name).next().is_some(),
                "no {name} span in the trace on {backend:?}: {:?}",
                traced.iter().map(|span| &span.name).collect::<Vec<_>>()
            );
        }
        // Each effect the record enqueued is a child of the record's transaction, however
        // much later a dispatcher claimed it from the database.
        let record = named("record").next().expect("the record's span");
        let effect_spans: Vec<_> = named("effect").collect();
        assert_eq!(effect_spans.len(), effects.len(), "on {backend:?}");
        for effect in &effect_spans {
            assert_eq!(effect.parent_span_id, record.span_id, "on {backend:?}");
        }
        let kinds: HashSet<_> = effect_spans
            .iter()
            .filter_map(|span| span.attributes.get("effect.kind").cloned())
            .collect();
        let expected: HashSet<_> = effects
            .iter()
            .map(|(kind, _)| kind.as_str().to_owned())
            .collect();
        assert_eq!(kinds, expected, "on {backend:?}");
        // The receipt's delivery works inside its effect's span.
        let deliver = named("deliver").next().expect("the receipt's span");
        assert!(
            effect_spans
                .iter()
                .any(|e| e.span_id == deliver.parent_span_id),
            "on {backend:?}"
        );

        // The outsider's delivery ended first; nothing of it was exported.
        assert_eq!(of_session(&spans, &unsampled).count(), 0, "on {backend:?}");
        let outsiders = spans.iter().filter(|span| {
            span.attributes.get("event.id").map(String::as_str) == Some("evt_unsampled")
        });
        assert_eq!(outsiders.count(), 0, "on {backend:?}");
        assert!(
            collector
                .service_names
                .lock()
                .expect("names")
                .contains("fulfilld")
        );
    }
}
