//! A record answers with the outcome it stored, which a later read finds unchanged.

use fulfilld::catalog::Catalog;
use fulfilld::db::sessions::Record;
use fulfilld::domain::{
    AccountId, LineItem, PaymentStatus, SessionId, SessionState, SessionSummary, ShippingAddress,
    Status, Tell,
};
use proptest::prelude::*;

use crate::faults::connect;
use crate::helpers::{CATALOG, backends};

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
