//! The simulator on a port of its own: the test suite's Stripe.

use std::net::TcpListener;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer};

use super::Simulator;
use crate::catalog::Catalog;

/// A running simulator on 127.0.0.1; stops when dropped.
pub struct StripeDouble {
    url: String,
    simulator: Simulator,
    server: ServerHandle,
    connections: Arc<AtomicUsize>,
}

impl StripeDouble {
    /// Starts a simulator with no catalog on a free port, on the current actix system.
    pub fn start() -> std::io::Result<Self> {
        Self::with_catalog(Arc::default())
    }

    /// Starts a simulator that prices new sessions from `catalog`.
    pub fn with_catalog(catalog: Arc<Catalog>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let simulator = Simulator::new(catalog, &url, Duration::from_secs(1));
        let routes = simulator.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let opened = Arc::clone(&connections);
        let server =
            HttpServer::new(move || App::new().configure(|config| routes.configure(config)))
                .on_connect(move |_, _| {
                    opened.fetch_add(1, Ordering::Relaxed);
                })
                .workers(1)
                .disable_signals()
                .listen(listener)?
                .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Ok(Self {
            url,
            simulator,
            server: handle,
            connections,
        })
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// The API base to give fulfilld as `STRIPE_API_BASE`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Deref for StripeDouble {
    type Target = Simulator;

    fn deref(&self) -> &Simulator {
        &self.simulator
    }
}

impl Drop for StripeDouble {
    fn drop(&mut self) {
        // Stopping is asynchronous; the future need not be awaited to take effect.
        drop(self.server.stop(false));
    }
}
