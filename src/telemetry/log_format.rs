//! One log line per event: fields first, the message last, and the trace and span ids of the
//! span the event happened in, so that a log line leads to its trace.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as JSON objects or as `key=value` text.
pub(super) struct LogFormat {
    json: bool,
}

impl LogFormat {
    pub(super) fn new(json: bool) -> Self {
        Self { json }
    }
}

/// An event's fields, in the order they were written.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    values: Map<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, Value::from(format!("{value:?}")));
    }
}

impl Fields {
    fn insert(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(text) => text,
                other => other.to_string(),
            });
        } else if !field.name().starts_with("log.") {
            // `log.*` fields come from the `log` crate bridge and repeat the target.
            self.values.insert(field.name().to_owned(), value);
        }
    }
}

impl<S, N> FormatEvent<S, N> for LogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let timestamp = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let ids = ctx.lookup_current().and_then(|span| trace_ids(&span.id()));

        if self.json {
            let mut line = Map::new();
            line.insert("timestamp".into(), Value::from(timestamp.to_string()));
            line.insert("level".into(), Value::from(metadata.level().as_str()));
            line.insert("target".into(), Value::from(metadata.target()));
            line.extend(fields.values);
            if let Some((trace_id, span_id)) = ids {
                line.insert("trace_id".into(), Value::from(trace_id));
                line.insert("span_id".into(), Value::from(span_id));
            }
            line.insert(
                "message".into(),
                Value::from(fields.message.unwrap_or_default()),
            );
            let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
            return writeln!(writer, "{text}");
        }

        write!(
            writer,
            "{timestamp} {:>5} {}:",
            metadata.level(),
            metadata.target()
        )?;
        for (name, value) in &fields.values {
            match value {
                Value::String(text) => write!(writer, " {name}={text:?}")?,
                other => write!(writer, " {name}={other}")?,
            }
        }
        if let Some((trace_id, span_id)) = ids {
            write!(writer, " trace_id={trace_id} span_id={span_id}")?;
        }
        let mut message = fields.message.unwrap_or_default();
        if !message.is_empty() {
            message.insert(0, ' ');
        }
        writer.write_str(&message)?;
        writeln!(writer)
    }
}

/// The OpenTelemetry trace and span ids of span `id`, when traces are on and it is sampled or
/// carries a remote parent.
fn trace_ids(id: &tracing::span::Id) -> Option<(String, String)> {
    let context = tracing::dispatcher::get_default(|dispatch| {
        tracing_opentelemetry::get_otel_context(id, dispatch)
    })?;
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}
