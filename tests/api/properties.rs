//! Generated input at every parser and every door: whatever arrives, nothing panics, what
//! is refused says why, what is accepted is what the parser promises, and a running server
//! answers every request below 500, in time, and still fulfils afterwards.
//! `PROPTEST_CASES` sets how many cases each property tries (256 unless told).

use std::time::Duration;

use fulfilld::catalog::{Catalog, Kind};
use fulfilld::configuration::Secret;
use fulfilld::domain::{SessionId, Status, format_amount, parse_amount, refunded_skus};
use fulfilld::sandbox::SessionSpec;
use fulfilld::stripe::event;
use fulfilld::stripe::signature::{SignatureError, signature_header, verify};
use proptest::prelude::*;
use serde_json::Value;

use crate::helpers::{backends, spawn_app_with};

const SECRET: &str = "whsec_properties";
const NOW: i64 = 1_750_000_000;

/// Any JSON value, nested a few levels.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map(".{0,12}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Stripe's own example `checkout.session.completed`, as the envelope carries it.
fn completed_event() -> Value {
    let session: Value = serde_json::from_str(include_str!(
        "../../src/sandbox/fixtures/checkout.session.json"
    ))
    .expect("the fixture is JSON");
    serde_json::json!({
        "id": "evt_properties",
        "object": "event",
        "type": "checkout.session.completed",
        "livemode": false,
        "created": NOW,
        "data": { "object": session },
    })
}

/// The places in an event where a sender could put anything.
const PATHS: [&str; 12] = [
    "/id",
    "/type",
    "/created",
    "/account",
    "/livemode",
    "/data/object/id",
    "/data/object/payment_status",
    "/data/object/currency",
    "/data/object/amount_total",
    "/data/object/customer_details",
    "/data/object/metadata",
    "/data/object/payment_intent",
];

proptest! {
    #[test]
    fn a_stripe_signature_header_nobody_signed_is_refused(header in ".{0,200}", body in prop::collection::vec(any::<u8>(), 0..256)) {
        let secrets = [Secret::new(SECRET)];
        prop_assert!(verify(Some(&header), &body, &secrets, NOW).is_err());
    }

    #[test]
    fn a_signed_body_verifies_among_noise_and_no_other_body_does(
        body in prop::collection::vec(any::<u8>(), 0..256),
        other in prop::collection::vec(any::<u8>(), 0..256),
        skew in -300i64..=300,
        noise in prop::collection::vec("[a-z0-9]{1,3}=[ -+\\--~]{0,20}", 0..4),
    ) {
        let secrets = [Secret::new(SECRET)];
        let signed = signature_header(SECRET, NOW + skew, &body);
        let header = noise.iter().map(String::as_str).chain([signed.as_str()]).collect::<Vec<_>>().join(",");
        prop_assert_eq!(verify(Some(&header), &body, &secrets, NOW), Ok(()));
        if other != body {
            prop_assert_eq!(verify(Some(&header), &other, &secrets, NOW), Err(SignatureError::Mismatch));
        }
        let stale = signature_header(SECRET, NOW - 301 - skew.abs(), &body);
        prop_assert_eq!(verify(Some(&stale), &body, &secrets, NOW), Err(SignatureError::Stale));
    }

    #[test]
    fn any_bytes_as_an_event_are_parsed_or_refused_without_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = event::parse(&body);
    }

    #[test]
    fn an_event_with_anything_in_any_field_is_parsed_or_refused_and_its_session_id_is_valid(
        path in prop::sample::select(&PATHS[..]),
        value in json(),
    ) {
        let mut envelope = completed_event();
        if let Some(slot) = envelope.pointer_mut(path) {
            *slot = value;
        }
        let body = serde_json::to_vec(&envelope).expect("JSON");
        if let Ok(parsed) = event::parse(&body) {
            let rest = parsed.id().strip_prefix("evt_").unwrap_or_default();
            prop_assert!(!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            if let event::Event::Checkout { summary, .. } = &parsed {
                prop_assert!(SessionId::parse(summary.id.as_str()).is_ok());
            }
        }
    }

    #[test]
    fn a_session_id_is_accepted_exactly_when_stripe_could_have_made_it(raw in prop_oneof![
        ".{0,40}",
        "cs_(test|live)_[A-Za-z0-9]{0,300}",
        "cs_(test|live)_[A-Za-z0-9_%<>/.-]{1,30}",
    ]) {
        let rest = raw.strip_prefix("cs_test_").or_else(|| raw.strip_prefix("cs_live_"));
        let valid = raw.len() <= 255
            && rest.is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
        match SessionId::parse(&raw) {
            Ok(id) => {
                prop_assert!(valid, "{raw:?} accepted");
                prop_assert_eq!(id.as_str(), raw.as_str());
            }
            Err(why) => {
                prop_assert!(!valid, "{raw:?} refused: {why}");
                prop_assert!(why.contains("Checkout Session id"));
            }
        }
    }

    #[test]
    fn any_text_as_a_catalog_is_loaded_or_refused_naming_a_line(text in ".{0,300}") {
        if let Err(why) = Catalog::parse(&text) {
            prop_assert!(why.starts_with("line "), "{why}");
        }
    }

    #[test]
    fn a_catalog_of_generated_products_loads_only_products_it_can_sell(
        products in prop::collection::vec((
            "(price|plan|prod)_[a-z0-9]{0,6}",
            prop_oneof!["[A-Z0-9-]{1,8}", ".{0,10}"],
            prop::sample::select(vec!["physical", "digital", "other"]),
            any::<i64>(),
            prop::option::of(any::<i64>()),
            prop_oneof!["usd", "[a-zA-Z]{0,4}"],
            prop::option::of(prop_oneof![
                Just("https://dl.example.com/{sku}?o={session_id}&t={token}".to_owned()),
                "https?://[a-z{}]{0,12}",
            ]),
        ), 0..4),
    ) {
        let quote = |text: &str| serde_json::to_string(text).expect("a JSON string is a TOML string");
        let text: String = products.iter().map(|(price, sku, kind, stock, amount, currency, url)| {
            let mut table = format!(
                "[[product]]\nprice = {}\nsku = {}\nkind = {}\nstock = {stock}\ncurrency = {}\n",
                quote(price), quote(sku), quote(kind), quote(currency),
            );
            if let Some(amount) = amount {
                table += &format!("unit_amount = {amount}\n");
            }
            if let Some(url) = url {
                table += &format!("access_url = {}\n", quote(url));
            }
            table
        }).collect();
        match Catalog::parse(&text) {
            Ok(catalog) => {
                for product in catalog.products() {
                    prop_assert!(product.stock >= 0, "{product:?}");
                    prop_assert!(product.unit_amount.is_none_or(|amount| amount >= 0));
                    prop_assert!(product.sku.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{product:?}");
                    prop_assert_eq!(product.kind == Kind::Digital, product.access_url.is_some());
                    // What a refund's `items` names, the catalog can find.
                    let items = format!("{}:1", product.sku);
                    prop_assert_eq!(refunded_skus(&items), [product.sku.as_str()]);
                }
            }
            Err(why) => prop_assert!(why.starts_with("line "), "{why}"),
        }
    }

    #[test]
    fn amounts_read_back_as_written_and_nonsense_is_refused(
        minor in 0i64..=i64::MAX,
        currency in prop::sample::select(vec!["usd", "jpy", "kwd", "eur"]),
        text in ".{0,24}",
    ) {
        let written = format_amount(minor, currency);
        let (_, number) = written.split_once(' ').expect("code and number");
        prop_assert_eq!(parse_amount(number, currency), Ok(minor));
        if let Ok(parsed) = parse_amount(&text, currency) {
            prop_assert!(parsed >= 0);
            prop_assert!(text.trim().bytes().all(|b| b.is_ascii_digit() || b == b'.'));
        }
    }

    #[test]
    fn refund_items_name_only_skus_the_text_holds_with_a_positive_quantity(items in ".{0,60}") {
        for sku in refunded_skus(&items) {
            prop_assert!(!sku.is_empty() && items.contains(sku));
            prop_assert!(!sku.contains([',', ':']));
        }
    }
}

/// A request anyone could send: any method, a known path with anything in it, odd
/// headers, any body.
#[derive(Debug, Clone)]
struct Generated {
    method: String,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// Where fulfilld listens, `{}` standing for anything.
const DOORS: [&str; 17] = [
    "/webhook",
    "/",
    "/checkout",
    "/after-checkout?session_id={}",
    "/api/checkout-sessions/{}",
    "/api/access/{}",
    "/healthz",
    "/readyz",
    "/admin",
    "/admin?q={}",
    "/admin/login",
    "/admin/logout",
    "/admin/sessions/{}",
    "/admin/sessions/{}/refund",
    "/admin/effects/{}/retry",
    "/admin/events/{}/retry",
    "/{}",
];

fn generated() -> impl Strategy<Value = Generated> {
    let method = prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PURGE",
    ]);
    let filler = prop_oneof![
        "cs_(test|live)_[A-Za-z0-9]{1,40}",
        "[ -~]{0,60}",
        "[0-9]{1,20}",
        ".{0,20}",
    ];
    let header = prop_oneof![
        (
            Just("content-type"),
            prop_oneof![
                Just("application/json".to_owned()),
                Just("application/x-www-form-urlencoded".to_owned()),
                Just("multipart/form-data; boundary=x".to_owned()),
                "[ -~]{0,40}",
            ]
        ),
        (
            Just("content-encoding"),
            prop_oneof![
                Just("gzip".to_owned()),
                Just("br".to_owned()),
                Just("deflate".to_owned()),
                "[a-z]{0,8}",
            ]
        ),
        (
            Just("stripe-signature"),
            prop_oneof!["t=[0-9]{1,12},v1=[0-9a-f]{64}", "[ -~]{0,80}"]
        ),
        (
            Just("cookie"),
            prop_oneof!["fulfilld_admin=[ -~&&[^;]]{0,80}", "[ -~]{0,80}"]
        ),
        (
            Just("accept"),
            prop_oneof![Just("application/json".to_owned()), "[ -~]{0,30}"]
        ),
        (Just("authorization"), "Bearer [ -~]{0,40}"),
    ];
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        "(csrf|token|price|quantity|amount|items|confirm|nonce)=[ -~]{0,30}(&(price|quantity|token)=[ -~]{0,20}){0,3}"
            .prop_map(String::into_bytes),
        json().prop_map(|value| value.to_string().into_bytes()),
        (0usize..3).prop_map(|mb| vec![b'{'; 300_000 + mb * 700_000]),
    ];
    (
        method,
        prop::sample::select(&DOORS[..]),
        filler,
        prop::collection::vec(header, 0..4),
        body,
    )
        .prop_map(|(method, door, filler, headers, body)| {
            let filler: String = url::form_urlencoded::byte_serialize(filler.as_bytes()).collect();
            Generated {
                method: method.to_owned(),
                path: door.replace("{}", &filler),
                headers,
                body,
            }
        })
}

#[actix_web::test]
async fn generated_requests_get_no_5xx_and_no_hang_change_nothing_and_the_engine_still_fulfils() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};

    for backend in backends() {
        let app = spawn_app_with(&backend, |settings| {
            settings.admin_token = Some("generated-requests-admin-token".into());
        })
        .await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .expect("client");
        let mut runner = TestRunner::new(Config::default());
        let strategy = generated();
        for _ in 0..runner.config().cases {
            let request = strategy.new_tree(&mut runner).expect("a case").current();
            let method = reqwest::Method::from_bytes(request.method.as_bytes()).expect("method");
            let mut builder = client
                .request(method, format!("{}{}", app.address, request.path))
                .body(request.body.clone());
            for (name, value) in &request.headers {
                builder = builder.header(*name, value);
            }
            let shown = Generated {
                body: request.body.iter().copied().take(200).collect(),
                ..request.clone()
            };
            match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    // The whole answer arrives, too.
                    let answer = response.bytes().await;
                    assert!(
                        status.as_u16() < 500 && answer.is_ok(),
                        "{status} {answer:?} for {shown:?} on {backend:?}"
                    );
                }
                Err(error) => panic!("{error} for {shown:?} on {backend:?}"),
            }
        }
        assert!(
            app.db.list_events(false, 10).await.expect("db").is_empty(),
            "an event was stored from generated input on {backend:?}"
        );
        let session = app
            .stripe
            .add_session(SessionSpec::paid(&[("Book", 1500, 1)]));
        app.deliver(
            "evt_after_generated",
            "checkout.session.completed",
            &session,
        )
        .await;
        app.wait_for(&session, Status::Fulfilled).await;
    }
}
