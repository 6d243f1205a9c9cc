//! The sandbox's dispute buttons: a customer disputes a completed session's payment with
//! their bank, and the bank decides, told of as Stripe does with
//! `charge.dispute.created`, `charge.dispute.closed` and, for a dispute won,
//! `charge.dispute.funds_reinstated`.

use actix_web::{HttpRequest, HttpResponse, web};

use super::hosted::{emit_object, same_site, see_other};
use super::objects;
use super::state::Shared;

/// What a dispute button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Open,
    Won,
    Lost,
}

/// `POST /sandbox/checkout/{id}/dispute/{step}` (`open`, `won` or `lost`): opens a dispute
/// of session `id`'s payment, or decides the open one, and sends the customer back to
/// their order. Only from the sandbox's own pages.
pub(super) async fn dispute(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let (id, step) = path.into_inner();
    let step = match step.as_str() {
        "open" => Step::Open,
        "won" => Step::Won,
        "lost" => Step::Lost,
        _ => return HttpResponse::NotFound().body("No such dispute step."),
    };
    if !same_site(&request, &shared) {
        return HttpResponse::Forbidden().body("The sandbox disputes only from its own pages.");
    }
    let payment_intent = objects::payment_intent_of(&id);
    let events = {
        let mut state = shared.lock();
        let Some(spec) = state.sessions.get(&id).filter(|s| s.status == "complete") else {
            return HttpResponse::NotFound().body("No such completed session.");
        };
        let (amount, currency) = (spec.amount_total(), spec.currency.clone());
        let back = spec
            .success_url
            .as_deref()
            .map(|url| url.replace("{CHECKOUT_SESSION_ID}", &id));
        let created = crate::db::now_ms() / 1000;
        let open = state
            .disputes
            .iter()
            .position(|(pi, _, status)| pi == &payment_intent && *status == "needs_response");
        let events = match (step, open) {
            (Step::Open, None) => {
                let dispute = state.new_id("dp_");
                state
                    .disputes
                    .push((payment_intent.clone(), dispute.clone(), "needs_response"));
                vec![("charge.dispute.created", dispute, "needs_response")]
            }
            (Step::Won | Step::Lost, Some(at)) => {
                let status = if step == Step::Won { "won" } else { "lost" };
                state.disputes[at].2 = status;
                let dispute = state.disputes[at].1.clone();
                let mut events = vec![("charge.dispute.closed", dispute.clone(), status)];
                if step == Step::Won {
                    events.push(("charge.dispute.funds_reinstated", dispute, status));
                }
                events
            }
            // Nothing to open or decide: the page shows where things stand.
            _ => Vec::new(),
        };
        (events, amount, currency, created, back)
    };
    let (events, amount, currency, created, back) = events;
    for (event_type, dispute, status) in events {
        let object = objects::dispute(
            &dispute,
            &payment_intent,
            amount,
            &currency,
            status,
            created,
        );
        emit_object(&shared, event_type, object).await;
    }
    see_other(back.as_deref().unwrap_or("/"))
}
