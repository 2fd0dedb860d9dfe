//! Logs and traces.
//!
//! Logs go to standard output: JSON for machines, text for people, with the trace and span ids
//! of the span they were written in. Traces go to an OTLP collector through
//! `tracing-opentelemetry`, configured by the standard `OTEL_*` variables; without an endpoint
//! no exporter exists and spans cost what plain `tracing` spans cost.

mod log_format;

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::{LogFormat, LogSettings};

/// The service name traces carry unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` says
/// otherwise.
pub const SERVICE_NAME: &str = "tiktok-auth0-proxy";

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` names a protocol the exporter does not speak.
    #[error("{variable}={value} is not supported: use `grpc` or `http/protobuf`")]
    UnsupportedProtocol {
        /// The variable that named it.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What has to be flushed before the process exits.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber, and the OTLP pipeline when an endpoint is configured.
    /// `RUST_LOG`, when set, wins over `settings.filter`. Must run inside a Tokio runtime.
    pub fn init(settings: &LogSettings) -> Result<Self, TelemetryError> {
        let filter = std::env::var("RUST_LOG")
            .ok()
            .and_then(|filter| EnvFilter::try_new(filter).ok())
            .unwrap_or_else(|| EnvFilter::new(&settings.filter));
        let json = match settings.format {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => !std::io::stdout().is_terminal(),
        };
        let log_layer = tracing_subscriber::fmt::layer()
            .event_format(log_format::LogFormat::new(json))
            .with_ansi(!json);

        let provider = tracer_provider()?;
        let trace_layer = provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SERVICE_NAME))
                .with_level(true)
        });
        // Propagation is installed either way: without a provider there is no span context to
        // inject, so calls to TikTok simply carry no `traceparent`.
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

        tracing_subscriber::registry()
            .with(filter)
            .with(trace_layer)
            .with(log_layer)
            .init();
        if provider.is_some() {
            let protocol = otlp_protocol().map_or("http/protobuf".to_owned(), |(_, value)| value);
            let endpoint = otlp_endpoint().map(|endpoint| without_credentials(&endpoint));
            tracing::info!(%protocol, endpoint, "exporting traces over OTLP");
        }
        Ok(Self { provider })
    }

    /// Exports the spans still buffered and stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks until the export finishes, so it runs off the async
        // workers, where it cannot stall the export it waits for.
        let result = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_secs(5))
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "flushing traces failed"),
            Err(error) => tracing::warn!(%error, "flushing traces failed"),
        }
    }
}

/// The tracer provider the `OTEL_*` variables describe, or `None` when they name no endpoint
/// or turn tracing off.
fn tracer_provider() -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let set = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    };
    let disabled = set("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|value| value.eq_ignore_ascii_case("none"));
    if disabled || otlp_endpoint().is_none() {
        return Ok(None);
    }

    // The exporter reads the endpoint, headers, timeout and compression variables itself.
    let protocol = otlp_protocol();
    let exporter = match protocol
        .as_ref()
        .map(|(variable, value)| (*variable, value.as_str()))
    {
        Some((_, "grpc")) => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_protocol(opentelemetry_otlp::Protocol::Grpc)
            .build()?,
        None | Some((_, "http/protobuf")) => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?,
        Some((variable, value)) => {
            return Err(TelemetryError::UnsupportedProtocol {
                variable,
                value: value.to_owned(),
            });
        }
    };

    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource())
        .build();
    Ok(Some(provider))
}

/// The collector's endpoint, signal-specific first.
fn otlp_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|variable| {
        std::env::var(variable)
            .ok()
            .filter(|value| !value.trim().is_empty())
    })
}

/// An endpoint fit for a log line: any user name or password in it removed.
fn without_credentials(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// The protocol variable in force, signal-specific first: its name and value.
fn otlp_protocol() -> Option<(&'static str, String)> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|variable| {
        let value = std::env::var(variable).ok()?.trim().to_owned();
        (!value.is_empty()).then_some((variable, value))
    })
}

/// The resource: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` as the SDK reads them, with
/// this service's name as the default and its version always.
fn resource() -> Resource {
    let named_by_environment = std::env::var("OTEL_SERVICE_NAME")
        .is_ok_and(|name| !name.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    let mut builder = Resource::builder();
    if !named_by_environment {
        builder = builder.with_service_name(SERVICE_NAME);
    }
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}
