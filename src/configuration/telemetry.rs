//! How logs are written, and the settings of trace export under OpenTelemetry's standard
//! names.

use clap::{Args, ValueEnum};
use url::Url;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where traces go, and how many.
#[derive(Args, Clone, Debug)]
pub struct TelemetrySettings {
    /// An OTLP/HTTP collector (`http://collector:4318`): traces are exported to its
    /// `/v1/traces`, as protobuf or, with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`, as JSON
    /// [default: no export].
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_parser = parse_endpoint,
        global = true
    )]
    pub otel_exporter_otlp_endpoint: Option<Url>,
    /// The share of traces begun here that are exported, from 0 to 1; a trace continued
    /// from a caller's `traceparent` is exported when the caller's was.
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER_ARG",
        default_value = "1",
        value_parser = parse_ratio,
        global = true
    )]
    pub otel_traces_sampler_arg: f64,
}

impl TelemetrySettings {
    /// The collector's traces endpoint, when traces are exported.
    pub fn traces_endpoint(&self) -> Option<String> {
        let base = self.otel_exporter_otlp_endpoint.as_ref()?;
        Some(format!("{}/v1/traces", base.as_str().trim_end_matches('/')))
    }
}

/// A collector reached over plain HTTP, as an agent or sidecar beside the engine is.
fn parse_endpoint(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("not a URL: {error}"))?;
    match url.scheme() {
        "http" if url.query().is_some() || url.fragment().is_some() => {
            Err("expected the collector's base URL, without a query or fragment".to_owned())
        }
        "http" if url.host().is_some() => Ok(url),
        "https" => Err(
            "https is not supported: point it at a collector or agent reached \
             over http (e.g. http://localhost:4318), which forwards over TLS"
                .to_owned(),
        ),
        _ => Err("expected an http:// URL, like http://localhost:4318".to_owned()),
    }
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err("expected a ratio from 0 to 1, like 0.25".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_endpoint_is_the_collector_s_v1_traces() {
        for base in ["http://collector:4318", "http://collector:4318/"] {
            let settings = TelemetrySettings {
                otel_exporter_otlp_endpoint: Some(parse_endpoint(base).unwrap()),
                otel_traces_sampler_arg: 1.0,
            };
            assert_eq!(
                settings.traces_endpoint().as_deref(),
                Some("http://collector:4318/v1/traces")
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_export_to() {
        assert!(parse_endpoint("https://collector:4318").is_err());
        assert!(parse_endpoint("collector:4318").is_err());
        assert!(parse_endpoint("not a url").is_err());
        assert!(parse_endpoint("http://collector:4318/?tenant=a").is_err());
        for ratio in ["-0.1", "1.5", "NaN", "half"] {
            assert!(parse_ratio(ratio).is_err(), "{ratio}");
        }
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
    }
}
