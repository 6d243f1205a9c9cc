//! The HTTP client behind async-stripe's request types: connections kept alive.
//!
//! async-stripe's own client opens a connection per call (`pool_max_idle_per_host(0)`),
//! because Stripe closes idle connections at any time and a pooled one may turn out dead
//! when used. This client keeps them (reqwest's pool), and answers that hazard instead: a
//! GET that fails before any answer came back is sent again at once, once, on a fresh
//! connection; so is a POST that carries an idempotency key, which Stripe answers once
//! however often it arrives. Every other failure is left to the gateway's retry policy.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use stripe::StripeError;
use stripe_client_core::{CustomizedStripeRequest, StripeClient, StripeMethod};

use crate::metrics::{Endpoint, METRICS, StripeCall, seconds};

/// How long an unused connection is kept: shorter than a load balancer's idle timeout,
/// so most dead connections are dropped before they are picked.
const IDLE_FOR: Duration = Duration::from_secs(20);

/// A Stripe API client over a pool of kept-alive connections; cheap to clone.
#[derive(Clone)]
pub struct PooledClient {
    http: reqwest::Client,
    /// `…/v1`, to which a request's path is appended.
    base: String,
    timeout: Duration,
}

impl PooledClient {
    /// A client for `api_base` (`https://api.stripe.com/` or a double's), authenticating
    /// with `secret`, allowing each attempt `timeout`.
    pub fn new(secret: &str, api_base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut authorization = HeaderValue::try_from(format!("Bearer {secret}"))
            .map_err(|_| anyhow::anyhow!("the Stripe key is not a valid header value"))?;
        authorization.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization);
        headers.insert(
            "stripe-version",
            HeaderValue::from_static(super::pinned_api_version()),
        );
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!(
                "Stripe/v1 RustBindings fulfilld/",
                env!("CARGO_PKG_VERSION")
            )),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .pool_idle_timeout(IDLE_FOR)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| anyhow::anyhow!("could not build the Stripe client: {e}"))?;
        Ok(Self {
            http,
            base: format!("{}/v1", api_base.trim_end_matches('/')),
            timeout,
        })
    }

    fn request(&self, request: &Request) -> reqwest::RequestBuilder {
        let method = match request.method {
            StripeMethod::Get => reqwest::Method::GET,
            StripeMethod::Post => reqwest::Method::POST,
            StripeMethod::Delete => reqwest::Method::DELETE,
        };
        let mut url = format!("{}{}", self.base, request.path);
        if let Some(query) = &request.query {
            url.push('?');
            url.push_str(query);
        }
        let mut builder = self.http.request(method, url).timeout(self.timeout);
        if let Some(key) = &request.idempotency_key {
            builder = builder.header("idempotency-key", key.as_str());
        }
        if let Some(account) = &request.account {
            builder = builder.header("stripe-account", account.as_str());
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body.clone());
        }
        builder
    }

    async fn send(&self, request: &Request) -> Result<bytes::Bytes, StripeError> {
        let endpoint = request.endpoint();
        let started = std::time::Instant::now();
        let answer = self.exchange(request).await;
        let status = match &answer {
            Ok((status, _)) => status_label(*status),
            Err(StripeError::Timeout) => "timeout",
            Err(_) => "network",
        };
        METRICS
            .stripe_requests
            .get_or_create(&StripeCall { endpoint, status })
            .inc();
        METRICS
            .stripe_request_duration
            .get_or_create(&Endpoint { endpoint })
            .observe(seconds(started.elapsed()));
        let (status, body) = answer?;
        if status.is_success() {
            return Ok(body);
        }
        let text = std::str::from_utf8(&body).unwrap_or_default();
        Err(
            miniserde::json::from_str::<stripe_shared::Error>(text).map_or_else(
                |_| StripeError::JSONDeserialize(format!("status {status} with no Stripe error")),
                |error| StripeError::Stripe(error.error, status.as_u16()),
            ),
        )
    }

    /// One request and its whole answer, whatever its status.
    async fn exchange(
        &self,
        request: &Request,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), StripeError> {
        let response = match self.request(request).send().await {
            Ok(response) => response,
            // No answer at all, on a connection the pool may have kept past its life:
            // safe to repeat for a read, or a write Stripe deduplicates.
            Err(error) if request.repeatable() && !error.is_timeout() => {
                tracing::debug!(error = %error, "Stripe connection failed, sending again");
                self.request(request).send().await.map_err(transport)?
            }
            Err(error) => return Err(transport(error)),
        };
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        Ok((status, body))
    }
}

/// What one call sends.
struct Request {
    method: StripeMethod,
    path: String,
    query: Option<String>,
    body: Option<String>,
    idempotency_key: Option<String>,
    account: Option<String>,
}

impl Request {
    fn repeatable(&self) -> bool {
        matches!(self.method, StripeMethod::Get) || self.idempotency_key.is_some()
    }

    /// Which of the endpoints fulfilld uses this is, as a metric's label.
    fn endpoint(&self) -> &'static str {
        let path = self.path.trim_start_matches('/');
        let parts: Vec<&str> = path.split('/').collect();
        match (&self.method, parts.as_slice()) {
            (StripeMethod::Get, ["checkout", "sessions", _, "line_items"]) => "list_line_items",
            (StripeMethod::Get, ["checkout", "sessions", _]) => "retrieve_session",
            (StripeMethod::Get, ["checkout", "sessions"]) => "list_sessions",
            (StripeMethod::Post, ["checkout", "sessions"]) => "create_session",
            (StripeMethod::Get, ["events"]) => "list_events",
            _ => "other",
        }
    }
}

/// An HTTP status as a label: the ones Stripe documents by number, any other by class.
fn status_label(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        400 => "400",
        401 => "401",
        402 => "402",
        403 => "403",
        404 => "404",
        409 => "409",
        424 => "424",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        code if code < 300 => "2xx",
        code if code < 500 => "4xx",
        _ => "5xx",
    }
}

impl StripeClient for PooledClient {
    type Err = StripeError;

    async fn execute(&self, request: CustomizedStripeRequest) -> Result<bytes::Bytes, StripeError> {
        let (builder, config) = request.into_pieces();
        let request = Request {
            method: builder.method,
            path: builder.path,
            query: builder.query,
            body: builder.body,
            idempotency_key: config
                .request_strategy
                .and_then(|strategy| strategy.get_key())
                .map(|key| key.as_str().to_owned()),
            account: config.account_id.map(|account| account.as_str().to_owned()),
        };
        self.send(&request).await
    }
}

fn transport(error: reqwest::Error) -> StripeError {
    if error.is_timeout() {
        StripeError::Timeout
    } else {
        StripeError::ClientError(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use stripe_client_core::RequestBuilder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers the first request of each connection and keeps the
    /// connection open, then drops it unanswered when a second request arrives on it, as
    /// a server does to a connection it already closed on its side.
    async fn one_answer_per_connection() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = [0; 4096];
                    let _ = stream.read(&mut buffer).await;
                    let body = r#"{"ok":true}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    stream.write_all(answer.as_bytes()).await.unwrap();
                    // The next request on this connection is read, never answered.
                    let _ = stream.read(&mut buffer).await;
                });
            }
        });
        (url, connections)
    }

    async fn get(client: &PooledClient) -> Result<miniserde::json::Value, StripeError> {
        RequestBuilder::new(StripeMethod::Get, "/checkout/sessions/cs_test_1")
            .customize()
            .send(client)
            .await
    }

    #[tokio::test]
    async fn a_read_on_a_kept_alive_connection_that_died_is_sent_again_on_a_new_one() {
        let (url, connections) = one_answer_per_connection().await;
        let client = PooledClient::new("sk_test_1", &url, Duration::from_secs(5)).unwrap();
        for _ in 0..3 {
            get(&client).await.expect("every read is answered");
        }
        // Each read after the first found its pooled connection dead and used a new one.
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }
}
