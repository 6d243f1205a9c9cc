//! The admin pages: sessions (with search), one session's timeline, dead letters, stock.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::views::{EffectLine, EventLine, ReversalLine, SessionLine, StockLine, notice, when};
use super::{AdminError, Operator, field, html};
use crate::db::figures::Figures;
use crate::domain::{AccessGrant, EffectStatus, ItemLine, SessionId, format_money};
use crate::replicas::Standing;
use crate::web::AppState;

/// Sessions listed at most, newest first.
const SESSIONS_SHOWN: i64 = 50;
/// Dead effects and dead events listed at most, each.
const DEAD_SHOWN: i64 = 200;
/// The longest search looked for: longer than any session id or email address.
const MAX_SEARCH: usize = 320;

#[derive(Template)]
#[template(path = "admin/sessions.html")]
struct SessionsPage {
    csrf: Option<String>,
    search: String,
    sessions: Vec<SessionLine>,
    /// The inbox and outbox now; the page shows what is dead.
    dead: Figures,
    /// Which replica answers, and which one leads.
    standing: Standing,
}

/// `GET /admin`: the latest sessions.
pub async fn sessions(
    operator: Operator,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    sessions_page(&operator, &state, String::new()).await
}

/// `POST /admin` (`q`, `csrf`): the sessions whose id starts with `q` or whose customer
/// email contains it. A form, not a query string, so that customers' email addresses stay
/// out of URLs, browser histories and access logs.
pub async fn search(
    operator: Operator,
    form: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    operator.check_csrf(&form)?;
    let search = field(&form, "q")
        .map(|q| q.trim().chars().take(MAX_SEARCH).collect::<String>())
        .unwrap_or_default();
    sessions_page(&operator, &state, search).await
}

async fn sessions_page(
    operator: &Operator,
    state: &AppState,
    search: String,
) -> Result<HttpResponse, AdminError> {
    let found = state
        .db
        .recent_sessions(
            Some(search.as_str()).filter(|q| !q.is_empty()),
            SESSIONS_SHOWN,
        )
        .await?;
    let page = SessionsPage {
        csrf: Some(operator.csrf()),
        sessions: found
            .into_iter()
            .map(|row| SessionLine::new(row, state.locale))
            .collect(),
        dead: state.db.figures().await?,
        standing: state.standing.borrow().clone(),
        search,
    };
    Ok(html(StatusCode::OK, &page))
}

struct ShipmentLine {
    status: &'static str,
    items: Vec<String>,
    address: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin/timeline.html")]
struct TimelinePage {
    csrf: Option<String>,
    id: String,
    session: Option<SessionLine>,
    items: Vec<ItemLine>,
    events: Vec<EventLine>,
    effects: Vec<EffectLine>,
    /// (SKU, quantity, applied).
    movements: Vec<(String, i64, bool)>,
    shipment: Option<ShipmentLine>,
    access: Vec<AccessGrant>,
    reversals: Vec<ReversalLine>,
    notice: Option<String>,
    /// Whether the refund form is shown: fulfilled, and not all refunded.
    refundable: bool,
    /// The refund form's fields, empty.
    typed_amount: String,
    typed_items: String,
}

/// `GET /admin/sessions/{id}`: everything recorded about one session.
pub async fn timeline(
    operator: Operator,
    path: web::Path<String>,
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let id = SessionId::parse(&path).map_err(AdminError::MalformedId)?;
    let db = &state.db;
    let session = db.session_row(id.as_str()).await?;
    let events = db.events_of(id.as_str()).await?;
    let effects = db.list_effects_of(&id).await?;
    if session.is_none() && events.is_empty() && effects.is_empty() {
        return Err(AdminError::UnknownSession);
    }
    let mut outcome = db.outcome(&id).await?;
    if let Some(outcome) = outcome.as_mut() {
        // What is left to ship: units refunds gave back are not the operator's to send.
        db.leave_off_shipment(outcome).await?;
    }
    let shipment = outcome
        .as_ref()
        .and_then(|outcome| outcome.shipment.as_ref());
    let currency = outcome
        .as_ref()
        .and_then(|outcome| outcome.currency.clone())
        .unwrap_or_else(|| "usd".to_owned());
    let reversals = db.reversals_of(id.as_str()).await?;
    let page = TimelinePage {
        csrf: Some(operator.csrf()),
        notice: notice_of(&request),
        refundable: outcome.as_ref().is_some_and(|outcome| {
            outcome.status.was_fulfilled()
                && outcome
                    .amount_total
                    .is_none_or(|total| total > outcome.amount_refunded)
        }),
        reversals: reversals
            .into_iter()
            .map(|row| ReversalLine::new(row, &currency, state.locale))
            .collect(),
        typed_amount: String::new(),
        typed_items: String::new(),
        items: outcome
            .as_ref()
            .map(|o| o.item_lines(|minor, currency| format_money(minor, currency, state.locale)))
            .unwrap_or_default(),
        access: outcome
            .as_ref()
            .map(|o| o.access.clone())
            .unwrap_or_default(),
        shipment: shipment.map(|shipment| ShipmentLine {
            status: shipment.status.as_str(),
            items: shipment
                .items
                .iter()
                .map(|item| format!("{} x {} ({})", item.quantity, item.name, item.sku))
                .collect(),
            address: shipment
                .address
                .as_ref()
                .map(|address| address.lines())
                .unwrap_or_default(),
        }),
        movements: db.stock_movements_of(id.as_str()).await?,
        session: session.map(|row| SessionLine::new(row, state.locale)),
        events: events.into_iter().map(EventLine::from).collect(),
        effects: effects.into_iter().map(EffectLine::from).collect(),
        id: id.to_string(),
    };
    Ok(html(StatusCode::OK, &page))
}

#[derive(Deserialize)]
struct NoticeQuery {
    notice: Option<String>,
    id: Option<String>,
}

/// The notice `?notice=…&id=…` asks for, if it is one of [`notice`]'s.
fn notice_of(request: &HttpRequest) -> Option<String> {
    let query = web::Query::<NoticeQuery>::from_query(request.query_string()).ok()?;
    let query = query.into_inner();
    notice(query.notice.as_deref()?, query.id.as_deref()?)
}

#[derive(Template)]
#[template(path = "admin/dead.html")]
struct DeadPage {
    csrf: Option<String>,
    notice: Option<String>,
    effects: Vec<EffectLine>,
    events: Vec<EventLine>,
}

/// `GET /admin/dead`: what gave up and waits for an operator, each with a retry button.
pub async fn dead(
    operator: Operator,
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let notice = notice_of(&request);
    let effects = state
        .db
        .list_effects(Some(EffectStatus::Dead), DEAD_SHOWN)
        .await?;
    let events = state.db.list_events(true, DEAD_SHOWN).await?;
    let page = DeadPage {
        csrf: Some(operator.csrf()),
        notice,
        effects: effects.into_iter().map(EffectLine::from).collect(),
        events: events.into_iter().map(EventLine::from).collect(),
    };
    Ok(html(StatusCode::OK, &page))
}

#[derive(Template)]
#[template(path = "admin/stock.html")]
struct StockPage {
    csrf: Option<String>,
    levels: Vec<StockLine>,
    checked: String,
}

/// `GET /admin/stock`: every SKU's stock, oversold ones flagged.
pub async fn stock(
    operator: Operator,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let levels = state
        .db
        .stock_levels()
        .await?
        .into_iter()
        .map(|row| {
            let name = state
                .catalog
                .products()
                .iter()
                .find(|product| product.sku == row.sku)
                .and_then(|product| product.name.clone());
            StockLine::new(row, name)
        })
        .collect();
    let page = StockPage {
        csrf: Some(operator.csrf()),
        levels,
        checked: when(crate::db::now_ms()),
    };
    Ok(html(StatusCode::OK, &page))
}
