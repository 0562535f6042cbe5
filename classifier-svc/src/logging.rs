//! Logs: human-readable text (default) or one JSON object per line (`--log-format json`), both
//! filtered by `RUST_LOG` (default `info`), on stderr; optionally spans to OpenTelemetry.
//!
//! A JSON line carries `ts` (Unix seconds), `level`, `target`, `message`, the event's fields,
//! the fields of every enclosing span (so each line of a request carries its `request_id`)
//! and `spans`, the names of those spans from the root.

use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber; with `tracer`, spans are also exported to OpenTelemetry
/// (see [`crate::telemetry`]).
pub fn init(format: LogFormat, tracer: Option<opentelemetry_sdk::trace::Tracer>) {
    let otel = tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t));
    let registry = tracing_subscriber::registry().with(otel).with(filter());
    match format {
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).init(),
        LogFormat::Json => registry.with(JsonLayer::new(std::io::stderr)).init(),
    }
}

/// Writes each event as one JSON line to the writer `make()` returns.
pub struct JsonLayer<W> {
    make: W,
}

impl<W> JsonLayer<W> {
    pub fn new(make: W) -> Self {
        Self { make }
    }
}

struct SpanFields(Map<String, Value>);

struct Visitor<'a>(&'a mut Map<String, Value>);

impl Visit for Visitor<'_> {
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().into(), serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null));
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}").into());
    }
}

impl<S, W, O> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: Fn() -> O + Send + Sync + 'static,
    O: Write,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut m = Map::new();
            attrs.record(&mut Visitor(&mut m));
            span.extensions_mut().insert(SpanFields(m));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(f) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut Visitor(&mut f.0));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut obj = Map::new();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        obj.insert("ts".into(), serde_json::Number::from_f64(ts).map(Value::Number).unwrap_or(Value::Null));
        obj.insert("level".into(), meta.level().to_string().into());
        obj.insert("target".into(), meta.target().into());
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                spans.push(Value::from(span.name()));
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &f.0 {
                        obj.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        event.record(&mut Visitor(&mut obj));
        if !spans.is_empty() {
            obj.insert("spans".into(), Value::Array(spans));
        }
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        let _ = (self.make)().write_all(line.as_bytes());
    }
}
