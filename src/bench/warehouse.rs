//! The benchmark's warehouse: answers every shipment request 200 and counts them by
//! `Idempotency-Key`, so a shipment asked for under two keys is seen.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

type Keys = Mutex<HashMap<String, u32>>;

/// A warehouse on 127.0.0.1, on the current actix system; stops when dropped.
pub struct WarehouseSink {
    url: String,
    keys: Arc<Keys>,
    server: ServerHandle,
}

impl WarehouseSink {
    /// Listens on a free port.
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!(
            "http://127.0.0.1:{}/shipments",
            listener.local_addr()?.port()
        );
        let keys: Arc<Keys> = Arc::default();
        let shared = web::Data::from(Arc::clone(&keys));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .default_service(web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Ok(Self {
            url,
            keys,
            server: handle,
        })
    }

    /// The URL to give fulfilld as `SHIPPING_WEBHOOK_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Checks that each of `sessions` had its shipment asked for, all under one key each
    /// (asking again under the same key is how a warehouse that honours it ships once).
    pub fn check(&self, sessions: &[String]) -> anyhow::Result<()> {
        let keys = lock(&self.keys).clone();
        for session in sessions {
            anyhow::ensure!(
                keys.contains_key(&format!("fulfilld-shipment-{session}")),
                "{session}'s shipment never reached the warehouse"
            );
        }
        anyhow::ensure!(
            keys.len() == sessions.len(),
            "{} idempotency keys for {} shipments",
            keys.len(),
            sessions.len()
        );
        Ok(())
    }
}

impl Drop for WarehouseSink {
    fn drop(&mut self) {
        drop(self.server.stop(false));
    }
}

async fn receive(request: HttpRequest, _body: web::Bytes, keys: web::Data<Keys>) -> HttpResponse {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("(none)")
        .to_owned();
    *lock(&keys).entry(key).or_default() += 1;
    HttpResponse::Ok().finish()
}

fn lock(keys: &Keys) -> MutexGuard<'_, HashMap<String, u32>> {
    keys.lock().unwrap_or_else(|poison| poison.into_inner())
}
