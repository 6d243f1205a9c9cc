//! A record answers with the outcome it stored, which a later read finds unchanged.

use fulfilld::catalog::Catalog;
use fulfilld::db::sessions::Record;
use fulfilld::domain::{
    AccountId, LineItem, PaymentStatus, SessionId, SessionState, SessionSummary, ShippingAddress,
    Status, Tell,
};
use proptest::prelude::*;

use crate::faults::connect;
use crate::helpers::{Backend, CATALOG, backends, execute_on, rows_on};

/// One generated record: what Stripe said of a session, and how it is recorded.
#[derive(Debug, Clone)]
struct Case {
    status: Status,
    elsewhere: bool,
    email: bool,
    address: bool,
    account: bool,
    /// Prices with their quantities: the catalog's, and one the catalog does not sell.
    cart: Vec<(&'static str, i64)>,
}

const PRICES: [&str; 4] = ["price_tee_m", "price_mug", "price_ebook", "price_unknown"];

fn case() -> impl Strategy<Value = Case> {
    let status = prop::sample::select(vec![
        Status::Fulfilled,
        Status::AwaitingPayment,
        Status::Expired,
        Status::PaymentFailed,
    ]);
    let cart = prop::sample::subsequence(PRICES.to_vec(), 0..=PRICES.len())
        .prop_shuffle()
        .prop_flat_map(|prices| {
            let quantities = prop::collection::vec(1..4_i64, prices.len());
            (Just(prices), quantities)
        })
        .prop_map(|(prices, quantities)| prices.into_iter().zip(quantities).collect());
    (status, any::<[bool; 4]>(), cart).prop_map(|(status, flags, cart)| {
        let [elsewhere, email, address, account] = flags;
        Case {
            status,
            elsewhere: elsewhere && status == Status::Fulfilled,
            email,
            address,
            account,
            cart,
        }
    })
}

fn summary(id: &SessionId, case: &Case) -> SessionSummary {
    SessionSummary {
        id: id.clone(),
        account: case
            .account
            .then(|| AccountId::parse("acct_1Records").expect("account")),
        livemode: false,
        state: SessionState::Complete,
        payment_status: PaymentStatus::Paid,
        currency: Some("usd".into()),
        amount_total: Some(case.cart.iter().map(|(_, quantity)| 1000 * quantity).sum()),
        customer_email: case.email.then(|| "buyer@example.com".into()),
        payment_intent: Some(format!("pi_{}", id.as_str())),
        shipping_address: case.address.then(|| {
            Box::new(ShippingAddress {
                name: "A. Buyer".into(),
                line1: Some("1 Main St".into()),
                line2: None,
                city: Some("Springfield".into()),
                state: None,
                postal_code: Some("12345".into()),
                country: Some("US".into()),
            })
        }),
        created: None,
    }
}

fn line_items(case: &Case) -> Vec<LineItem> {
    case.cart
        .iter()
        .zip(1..)
        .map(|((price, quantity), n)| LineItem {
            id: format!("li_{n}"),
            price_id: Some((*price).to_owned()),
            product_id: None,
            description: format!("Item {n}"),
            quantity: *quantity,
            currency: "usd".into(),
            unit_amount: Some(1000),
            amount_subtotal: 1000 * quantity,
            amount_total: 1000 * quantity,
        })
        .collect()
}

/// The record that makes a session's row builds its answer from what it wrote rather than
/// reading it back; generated records, every status and cart, check that answer against a
/// read of the same session afterwards.
#[actix_web::test]
async fn a_record_answers_with_what_a_read_of_the_session_finds_afterwards() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};

    let catalog = Catalog::load(std::path::Path::new(CATALOG)).expect("catalog");
    for backend in backends() {
        let database = backend.fresh_database().await;
        let db = connect(&database.url).await;
        db.seed_inventory(&catalog).await.expect("db");
        let mut runner = TestRunner::new(Config::with_cases(48));
        let strategy = case();
        for n in 0..runner.config().cases {
            let case = strategy.new_tree(&mut runner).expect("a case").current();
            let id = SessionId::parse(&format!("cs_test_record{n}")).expect("id");
            let items = line_items(&case);
            let plan = catalog.plan(&id, &items);
            let summary = summary(&id, &case);
            let recorded = db
                .record(Record {
                    summary: &summary,
                    status: case.status,
                    line_items: &items,
                    plan: &plan,
                    tell: Tell::default(),
                    elsewhere: case.elsewhere,
                    event: None,
                    trace: None,
                })
                .await
                .expect("recorded");
            assert!(recorded.claimed, "{case:?} on {backend:?}");
            let read = db.outcome(&id).await.expect("db").expect("stored");
            assert_eq!(recorded.outcome, read, "{case:?} on {backend:?}");
        }
    }
}

/// What a session went through before the record under test.
#[derive(Debug, Clone)]
struct Story {
    case: Case,
    /// Recorded `awaiting_payment` first, so that the record updates the row it finds.
    awaited_first: bool,
    /// The record carries out a stored event, which it marks processed.
    event: bool,
    /// Stock was held for the session while its customer paid.
    held: bool,
    /// A refund of its payment was stored before the session was recorded.
    refunded_first: bool,
    /// Who is told: the customer, the access system, the warehouse.
    tell: [bool; 3],
    /// The record is made again afterwards, as a redelivery or another replica makes it.
    repeated: bool,
}

fn story() -> impl Strategy<Value = Story> {
    (case(), any::<[bool; 5]>(), any::<[bool; 3]>()).prop_map(|(case, flags, tell)| {
        let [awaited_first, event, held, refunded_first, repeated] = flags;
        Story {
            case,
            awaited_first,
            event,
            held,
            refunded_first,
            tell,
            repeated,
        }
    })
}

/// Every row a record writes or changes, with the columns that do not hold a clock's
/// reading, one text a row.
const ROWS: [&str; 8] = [
    "SELECT id || '|' || status || '|' || CASE WHEN livemode THEN 't' ELSE 'f' END || '|' \
     || COALESCE(currency, '-') || '|' || COALESCE(CAST(amount_total AS TEXT), '-') || '|' \
     || COALESCE(customer_email, '-') || '|' || COALESCE(shipping_address, '-') || '|' \
     || CASE WHEN fulfilled_at IS NULL THEN '-' ELSE 'at' END || '|' \
     || COALESCE(account, '-') || '|' || COALESCE(payment_intent, '-') || '|' \
     || CAST(amount_refunded AS TEXT) AS row FROM checkout_sessions",
    "SELECT session_id || '|' || CAST(line_number AS TEXT) || '|' || id || '|' \
     || COALESCE(price_id, '-') || '|' || COALESCE(product_id, '-') || '|' || description \
     || '|' || CAST(quantity AS TEXT) || '|' || currency || '|' \
     || COALESCE(CAST(unit_amount AS TEXT), '-') || '|' || CAST(amount_subtotal AS TEXT) \
     || '|' || CAST(amount_total AS TEXT) AS row FROM line_items",
    "SELECT session_id || '|' || sku || '|' || CAST(quantity AS TEXT) || '|' \
     || CASE WHEN applied_at IS NULL THEN '-' ELSE 'at' END || '|' \
     || CASE WHEN returned_at IS NULL THEN '-' ELSE 'at' END AS row FROM stock_movements",
    "SELECT session_id || '|' || sku || '|' || name || '|' || url || '|' \
     || CASE WHEN revoked_at IS NULL THEN '-' ELSE 'at' END AS row FROM access_grants",
    "SELECT session_id || '|' || status || '|' || items AS row FROM shipments",
    "SELECT session_id || '|' || kind || '|' || status || '|' || CAST(attempts AS TEXT) \
     || '|' || subject || '|' || COALESCE(body, '-') || '|' || COALESCE(traceparent, '-') \
     || '|' || CASE WHEN lease_until IS NULL THEN '-' ELSE 'at' END AS row FROM effects",
    "SELECT id || '|' || sku || '|' || CAST(quantity AS TEXT) || '|' \
     || COALESCE(session_id, '-') || '|' || state || '|' \
     || CASE WHEN settled_at IS NULL THEN '-' ELSE 'at' END AS row FROM reservations",
    "SELECT id || '|' || CASE WHEN processed_at IS NULL THEN '-' ELSE 'at' END || '|' \
     || CASE WHEN lease_until IS NULL THEN '-' ELSE 'at' END AS row FROM webhook_events",
];

/// `row` with each reading of a clock in milliseconds (a run of 13 digits, as notices carry
/// in their bodies) replaced by `#`.
fn without_clock(row: &str) -> String {
    let mut out = String::with_capacity(row.len());
    let mut digits = String::new();
    for c in row.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        out.push_str(if digits.len() == 13 { "#" } else { &digits });
        digits.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// On PostgreSQL a record that makes its session's row writes everything in one statement,
/// and any other goes through a transaction; SQLite always takes the transaction. Generated
/// stories, each ending in a record that either makes the row or finds it, must leave the
/// same rows and get the same answers on both.
#[actix_web::test]
async fn the_same_records_leave_the_same_rows_on_both_backends() {
    use fulfilld::domain::{NewsKind, Progress, RefundStatus, ReversalNews};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let Some(postgres) = crate::helpers::postgres("records::the_same_records_leave_the_same_rows")
    else {
        return;
    };
    let catalog = Catalog::load(std::path::Path::new(CATALOG)).expect("catalog");
    // A new seed each run, named in every failure; `RECORDS_SEED` runs one again.
    let seed: u64 = std::env::var("RECORDS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut bytes = [0; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::with_cases(64),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = story();
    let stories: Vec<Story> = (0..runner.config().cases)
        .map(|_| strategy.new_tree(&mut runner).expect("a story").current())
        .collect();
    let mut seen = Vec::new();
    for backend in [Backend::Sqlite, postgres] {
        let database = backend.fresh_database().await;
        let db = connect(&database.url).await;
        db.seed_inventory(&catalog).await.expect("db");
        let mut answers = Vec::new();
        for (n, story) in stories.iter().enumerate() {
            let id = SessionId::parse(&format!("cs_test_both{n}")).expect("id");
            let case = &story.case;
            let summary = summary(&id, case);
            let payment_intent = summary.payment_intent.clone().expect("payment intent");
            if story.held {
                let hold = format!(
                    "INSERT INTO reservations (id, sku, quantity, session_id, state, \
                     expires_at, created_at) VALUES ('res_{n}', 'TEE-M', 1, '{id}', 'held', \
                     0, 0)"
                );
                execute_on(&database.url, &hold).await;
            }
            if story.event {
                let event = format!(
                    "INSERT INTO webhook_events (id, event_type, session_id, livemode, \
                     payload, received_at, next_attempt_at) VALUES ('evt_{n}', \
                     'checkout.session.completed', '{id}', FALSE, '{{}}', 0, 0)"
                );
                execute_on(&database.url, &event).await;
            }
            if story.refunded_first {
                let refund = ReversalNews {
                    id: format!("re_{n}"),
                    kind: NewsKind::Refund,
                    payment_intent,
                    amount: 500,
                    status: Progress::Refund(RefundStatus::Succeeded),
                    items: None,
                    event_created: 0,
                };
                db.store_refund(&refund).await.expect("refund stored");
            }
            let items = line_items(case);
            let plan = catalog.plan(&id, &items);
            let record = |status, event| Record {
                summary: &summary,
                status,
                line_items: &items,
                plan: &plan,
                tell: Tell {
                    customer: story.tell[0],
                    access: story.tell[1],
                    warehouse: story.tell[2],
                },
                elsewhere: case.elsewhere,
                event,
                trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            };
            if story.awaited_first {
                db.record(record(Status::AwaitingPayment, None))
                    .await
                    .expect("recorded");
            }
            let event = format!("evt_{n}");
            let mut story_answers = Vec::new();
            for _ in 0..1 + usize::from(story.repeated) {
                let recorded = db
                    .record(record(case.status, story.event.then_some(event.as_str())))
                    .await
                    .expect("recorded");
                // The only clock's reading in an answer: whether it is there compares.
                let mut outcome = recorded.outcome;
                outcome.fulfilled_at = outcome.fulfilled_at.map(|_| 1);
                story_answers.push((recorded.claimed, recorded.effects, outcome));
            }
            answers.push(story_answers);
        }
        let mut rows = Vec::new();
        for query in ROWS {
            // Sorted here: the backends' collations may order text differently.
            let mut read: Vec<_> = rows_on(&database.url, query)
                .await
                .iter()
                .map(|row| without_clock(row))
                .collect();
            read.sort();
            rows.push(read);
        }
        seen.push((backend, answers, rows));
    }
    let (sqlite, postgres) = (&seen[0], &seen[1]);
    assert!(
        sqlite.1.iter().flatten().any(|(claimed, _, _)| *claimed),
        "no story made a transition (RECORDS_SEED={seed})"
    );
    for (n, story) in stories.iter().enumerate() {
        assert_eq!(
            sqlite.1[n], postgres.1[n],
            "{story:?} (RECORDS_SEED={seed})"
        );
        if story.repeated {
            let again = &sqlite.1[n][1];
            assert!(!again.0, "made again: {story:?} (RECORDS_SEED={seed})");
        }
    }
    for (query, (sqlite, postgres)) in ROWS.iter().zip(sqlite.2.iter().zip(&postgres.2)) {
        let only_sqlite: Vec<_> = sqlite
            .iter()
            .filter(|row| !postgres.contains(row))
            .collect();
        let only_postgres: Vec<_> = postgres
            .iter()
            .filter(|row| !sqlite.contains(row))
            .collect();
        assert!(
            only_sqlite.is_empty() && only_postgres.is_empty(),
            "{query} (RECORDS_SEED={seed})\nonly on SQLite: {only_sqlite:#?}\n\
             only on PostgreSQL: {only_postgres:#?}"
        );
        assert_eq!(
            sqlite.len(),
            postgres.len(),
            "{query} (RECORDS_SEED={seed})"
        );
    }
}
