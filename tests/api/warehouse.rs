//! A warehouse (or access system) endpoint for the tests: records every request it is
//! sent, with its Standard Webhooks headers, and answers with scripted statuses, then 200.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

/// One request the warehouse received.
#[derive(Debug, Clone)]
pub struct ShipmentRequest {
    pub idempotency_key: Option<String>,
    /// `webhook-id`, `webhook-timestamp` and `webhook-signature`.
    pub webhook: [Option<String>; 3],
    /// The body as sent, byte for byte: what the signature covers.
    pub raw: String,
    pub body: Value,
    /// What the warehouse answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    requests: Vec<ShipmentRequest>,
    script: VecDeque<u16>,
}

pub struct Warehouse {
    url: String,
    state: Arc<Mutex<State>>,
    server: actix_web::dev::ServerHandle,
}

impl Warehouse {
    /// A warehouse that answers `script` in order, then 200 to everything.
    pub fn start(script: &[u16]) -> Self {
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            script: script.iter().copied().collect(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
        let url = format!("http://{}/shipments", listener.local_addr().unwrap());
        let shared = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .default_service(web::post().to(receive))
        })
        .workers(1)
        .listen(listener)
        .expect("warehouse listens")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url,
            state,
            server: handle,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn requests(&self) -> Vec<ShipmentRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Waits until at least `count` requests have arrived, then returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<ShipmentRequest> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} shipment requests arrived",
                requests.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Warehouse {
    fn drop(&mut self) {
        drop(self.server.stop(false));
    }
}

impl ShipmentRequest {
    /// Whether the request carries a valid Standard Webhooks signature under `secret`
    /// (`whsec_…`), checked as a receiver would: its own HMAC of `id.timestamp.body`.
    pub fn signed_with(&self, secret: &str) -> bool {
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let [Some(id), Some(timestamp), Some(signature)] = &self.webhook else {
            return false;
        };
        let engine = base64::engine::general_purpose::STANDARD;
        let key = engine
            .decode(secret.trim_start_matches("whsec_"))
            .expect("a base64 secret");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key");
        mac.update(format!("{id}.{timestamp}.{}", self.raw).as_bytes());
        let expected = format!("v1,{}", engine.encode(mac.finalize().into_bytes()));
        signature.split(' ').any(|candidate| candidate == expected)
    }
}

async fn receive(
    request: HttpRequest,
    raw: String,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let mut state = state.lock().unwrap();
    let status = state.script.pop_front().unwrap_or(200);
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    state.requests.push(ShipmentRequest {
        idempotency_key: header("Idempotency-Key"),
        webhook: [
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        ],
        body: serde_json::from_str(&raw).expect("a JSON body"),
        raw,
        status,
    });
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}
