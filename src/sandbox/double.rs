//! The Stripe API double: Checkout Session retrieve (with `expand[]=line_items`) and
//! list-line-items, Stripe-shaped errors, fault injection and a count of calls per session.

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

use super::objects::{self, EMBEDDED_ITEMS, ItemSpec};

/// A session the double knows.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub status: String,
    pub payment_status: String,
    pub currency: String,
    pub email: Option<String>,
    pub items: Vec<ItemSpec>,
    /// `collected_information.shipping_details`, Stripe-shaped.
    pub shipping_details: Option<Value>,
}

impl SessionSpec {
    /// A completed, paid session with `items` as (description, unit amount, quantity).
    pub fn paid(items: &[(&str, i64, u64)]) -> Self {
        Self {
            status: "complete".into(),
            payment_status: "paid".into(),
            currency: "usd".into(),
            email: Some("customer@example.com".into()),
            items: items
                .iter()
                .enumerate()
                .map(|(i, (description, unit_amount, quantity))| ItemSpec {
                    description: (*description).to_owned(),
                    price_id: format!("price_{i}{}", description.len()),
                    unit_amount: *unit_amount,
                    quantity: *quantity,
                })
                .collect(),
            shipping_details: None,
        }
    }

    /// The same session with its items' prices set to `price_ids`, in order (for example
    /// prices of the catalog).
    pub fn with_prices(mut self, price_ids: &[&str]) -> Self {
        for (item, price_id) in self.items.iter_mut().zip(price_ids) {
            item.price_id = (*price_id).to_owned();
        }
        self
    }

    /// The same session in another currency.
    pub fn with_currency(mut self, currency: &str) -> Self {
        self.currency = currency.into();
        self
    }

    /// The same session with the customer's shipping address collected.
    pub fn with_shipping(
        mut self,
        name: &str,
        line1: &str,
        city: &str,
        postal_code: &str,
        country: &str,
    ) -> Self {
        self.shipping_details = Some(serde_json::json!({
            "name": name,
            "address": {
                "line1": line1, "line2": null, "city": city, "state": null,
                "postal_code": postal_code, "country": country
            }
        }));
        self
    }

    /// The same session with another `payment_status`.
    pub fn with_payment_status(mut self, payment_status: &str) -> Self {
        self.payment_status = payment_status.into();
        self
    }

    /// The same session with another `status`.
    pub fn with_status(mut self, status: &str) -> Self {
        self.status = status.into();
        self
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, SessionSpec>,
    /// Statuses to answer instead of the real response, one per request.
    faults: VecDeque<u16>,
    delay: Duration,
    calls: HashMap<String, usize>,
    next_id: u64,
}

/// A running double; stops when dropped.
pub struct StripeDouble {
    url: String,
    state: Arc<Mutex<State>>,
    server: ServerHandle,
}

impl StripeDouble {
    /// Starts the double on a free port of 127.0.0.1, on the current actix system.
    pub fn start() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/v1/checkout/sessions/{id}", web::get().to(retrieve))
                .route(
                    "/v1/checkout/sessions/{id}/line_items",
                    web::get().to(line_items),
                )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Ok(Self {
            url,
            state,
            server: handle,
        })
    }

    /// The API base to give fulfilld as `STRIPE_API_BASE`.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a test-mode session and returns its id.
    pub fn add_session(&self, spec: SessionSpec) -> String {
        let mut state = self.state();
        state.next_id += 1;
        let id = format!("cs_test_{:016x}{}", state.next_id, fastrand::u64(..));
        state.sessions.insert(id.clone(), spec);
        id
    }

    /// Changes a session's `payment_status` (a delayed payment clearing or failing).
    pub fn set_payment_status(&self, id: &str, payment_status: &str) {
        if let Some(session) = self.state().sessions.get_mut(id) {
            session.payment_status = payment_status.into();
        }
    }

    /// Answers the next `count` requests with `status` and a Stripe error body.
    pub fn fail_next(&self, count: usize, status: u16) {
        self.state()
            .faults
            .extend(std::iter::repeat_n(status, count));
    }

    /// Delays every answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Requests made about session `id`, answered or not.
    pub fn calls(&self, id: &str) -> usize {
        self.state().calls.get(id).copied().unwrap_or(0)
    }

    /// The session object as Stripe would embed it in an event's `data.object`.
    pub fn session_object(&self, id: &str) -> Option<Value> {
        self.state()
            .sessions
            .get(id)
            .map(|spec| session_json(id, spec))
    }

    /// The JSON body of a webhook event of `event_type` about session `id`.
    pub fn event_payload(&self, event_id: &str, event_type: &str, id: &str) -> String {
        let object = self.session_object(id).unwrap_or(Value::Null);
        let created = crate::db::now_ms() / 1000;
        objects::event(event_id, event_type, object, created).to_string()
    }
}

impl Drop for StripeDouble {
    fn drop(&mut self) {
        // Stopping is asynchronous; the future need not be awaited to take effect.
        drop(self.server.stop(false));
    }
}

fn session_json(id: &str, spec: &SessionSpec) -> Value {
    let total = spec
        .items
        .iter()
        .map(|item| item.unit_amount * i64::try_from(item.quantity).unwrap_or(i64::MAX))
        .sum();
    let mut session = objects::checkout_session(
        id,
        &spec.status,
        &spec.payment_status,
        &spec.currency,
        total,
        spec.email.as_deref(),
    );
    if let Some(details) = &spec.shipping_details {
        session["collected_information"] = serde_json::json!({
            "business_name": null, "individual_name": null, "shipping_details": details
        });
    }
    session
}

/// Counts the call, applies the delay and any injected fault, then finds the session.
async fn prepare(
    request: &HttpRequest,
    state: &Mutex<State>,
    path: web::Path<String>,
) -> Result<(String, SessionSpec), HttpResponse> {
    let id = path.into_inner();
    let (delay, fault, session) = {
        let mut state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *state.calls.entry(id.clone()).or_default() += 1;
        (
            state.delay,
            state.faults.pop_front(),
            state.sessions.get(&id).cloned(),
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let authorized = request
        .headers()
        .get("Authorization")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("Bearer sk_") || value.starts_with("Bearer rk_"));
    if !authorized {
        return Err(HttpResponse::Unauthorized().json(objects::error(
            "invalid_request_error",
            None,
            "You did not provide an API key.",
        )));
    }
    if let Some(status) = fault {
        let body = match status {
            429 => objects::error(
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests",
            ),
            _ => objects::error("api_error", None, "An unknown error occurred"),
        };
        let code = actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        return Err(HttpResponse::build(code)
            .insert_header(("Stripe-Should-Retry", "true"))
            .json(body));
    }
    match session {
        Some(spec) => Ok((id, spec)),
        None => Err(HttpResponse::NotFound().json(objects::error(
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such checkout.session: '{id}'"),
        ))),
    }
}

async fn retrieve(
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let (id, spec) = match prepare(&request, &state, path).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let mut session = session_json(&id, &spec);
    let expand_items = query
        .iter()
        .any(|(key, value)| key.starts_with("expand") && value == "line_items");
    if expand_items {
        session["line_items"] = page(&id, &spec, None, EMBEDDED_ITEMS);
    }
    HttpResponse::Ok().json(session)
}

async fn line_items(
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let (id, spec) = match prepare(&request, &state, path).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let param = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let limit = param("limit")
        .and_then(|raw| raw.parse::<usize>().ok())
        .unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return HttpResponse::BadRequest().json(objects::error(
            "invalid_request_error",
            Some("parameter_invalid_integer"),
            "limit must be between 1 and 100",
        ));
    }
    HttpResponse::Ok().json(page(&id, &spec, param("starting_after").as_deref(), limit))
}

fn page(id: &str, spec: &SessionSpec, starting_after: Option<&str>, limit: usize) -> Value {
    let all: Vec<Value> = spec
        .items
        .iter()
        .enumerate()
        .map(|(index, item)| objects::line_item(id, index, item, &spec.currency))
        .collect();
    let start = starting_after
        .and_then(|after| all.iter().position(|item| item["id"] == after))
        .map_or(0, |position| position + 1);
    let end = (start + limit).min(all.len());
    let data = all
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    objects::list(
        &format!("/v1/checkout/sessions/{id}/line_items"),
        data,
        end < all.len(),
    )
}
