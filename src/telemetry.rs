//! Logging and traces. Logs are readable lines by default, JSON with `LOG_FORMAT=json`;
//! `RUST_LOG` filters. With `OTEL_EXPORTER_OTLP_ENDPOINT`, spans are exported over
//! OTLP/HTTP as well, and a caller's `traceparent` is continued: one trace follows a
//! delivery from `/webhook` through the session's actor, the Stripe call and the record's
//! transaction to every effect it enqueued, whose row carries the trace on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::web;
use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::{Level, Span};
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::configuration::{LogFormat, TelemetrySettings};
use crate::web::AppState;

/// async-stripe logs every failed attempt as a warning; the gateway logs the ones that
/// matter, once, with context.
const DEFAULT_FILTER: &str = "info,stripe=error,actix_server=warn";

/// Whether spans are exported: unless they are, no trace context is read, made or stored.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Keeps trace export running; dropping it sends the spans still buffered.
#[must_use = "dropping it stops trace export"]
pub struct Telemetry(Option<SdkTracerProvider>);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            EXPORTING.store(false, Ordering::Relaxed);
            if let Err(error) = provider.shutdown() {
                eprintln!("fulfilld: could not send the last traces: {error}");
            }
        }
    }
}

/// Installs the global subscriber, writing to standard error, and exporting spans when
/// `settings` name a collector. Spans wait in a bounded queue (2,048) for a thread of the
/// exporter's own, which sends them in batches; a collector that is slow or gone costs
/// dropped spans, never a stalled request.
pub fn init(format: LogFormat, settings: &TelemetrySettings) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // OpenTelemetry's switch for turning export off without unsetting the endpoint.
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|value| value.trim() == "true");
    let provider = match settings.traces_endpoint() {
        Some(endpoint) if !disabled => Some(provider(&endpoint, settings.otel_traces_sampler_arg)?),
        _ => None,
    };
    // A second call (tests) keeps the first subscriber, and what it exports.
    let installed = match &provider {
        // As without export: `RUST_LOG` filters for the whole subscriber, so a disabled
        // call site costs nothing at all.
        None => tracing_subscriber::registry()
            .with(filter)
            .with(logs(format))
            .try_init(),
        // Traces hold fulfilld's own spans, whatever `RUST_LOG` keeps of the logs.
        Some(provider) => {
            let export = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
                .with_filter(Targets::new().with_target(env!("CARGO_PKG_NAME"), Level::INFO));
            tracing_subscriber::registry()
                .with(logs(format).with_filter(filter))
                .with(export)
                .try_init()
        }
    }
    .is_ok();
    if !installed {
        return Ok(Telemetry(None));
    }
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry(provider))
}

/// The log lines, written to standard error.
fn logs<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
    }
}

fn provider(endpoint: &str, ratio: f64) -> anyhow::Result<SdkTracerProvider> {
    let mut exporter = SpanExporter::builder().with_http();
    // The standard variable for the traces' own endpoint, as given, goes first.
    if std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT: could not set up trace export")?;
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(env!("CARGO_PKG_NAME"));
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource.build())
        .build())
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The current span's trace as a W3C `traceparent`, to be stored with work another task
/// or process takes up later; `None` when spans are not exported.
pub fn traceparent() -> Option<String> {
    if !exporting() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// The current span's trace, for work this process hands to another task.
pub fn current() -> Option<opentelemetry::Context> {
    exporting().then(|| Span::current().context())
}

/// A span `make` makes, continuing the trace `parent` another task handed on; none when
/// there is no such trace (spans are not exported).
pub fn child_of(parent: Option<opentelemetry::Context>, make: impl FnOnce() -> Span) -> Span {
    match parent {
        Some(parent) => {
            let span = make();
            let _ = span.set_parent(parent);
            span
        }
        None => Span::none(),
    }
}

/// Makes `span`, not yet entered, continue the stored trace `traceparent`.
pub fn continue_stored(span: &Span, traceparent: Option<&str>) {
    if let (true, Some(traceparent)) = (exporting(), traceparent) {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    }
}

/// Makes `span`, not yet entered, continue the trace of the request's `traceparent` and
/// `tracestate` headers, if any, when the request comes from one of `TRUSTED_PROXIES`
/// (the load balancer or ingress where traces begin). Anyone else's trace context is
/// ignored: it would let any client choose which requests are exported, and how much
/// state each of their spans carries.
fn continue_remote(span: &Span, request: &ServiceRequest) {
    if !exporting() {
        return;
    }
    let trusted = request.peer_addr().is_some_and(|peer| {
        request
            .app_data::<web::Data<AppState>>()
            .is_some_and(|state| state.clients.is_trusted(peer.ip()))
    });
    if !trusted {
        return;
    }
    let headers = request.headers();
    let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    if !carrier.is_empty() {
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    }
}

/// The span of each HTTP request: method, route and path, never the query string, which
/// may hold what must not be logged (an admin's search for a customer's email address),
/// nor a download token.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // A download token is a bearer credential: only its route is logged.
        let path = match request.path() {
            path if path.starts_with("/api/access/") => "/api/access/{token}",
            path => path,
        };
        let span = tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = request.match_pattern().unwrap_or_default(),
            http.path = path,
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        );
        continue_remote(&span, request);
        span
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
