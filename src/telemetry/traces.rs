//! [`Tracing`]: OpenTelemetry traces of MCP requests, exported over OTLP/HTTP (JSON) when
//! `[telemetry] otlp_endpoint` is set. Each request from a client gets a span named after its
//! method (and tool), with the MCP semantic-convention attributes; it continues the trace the
//! client named in `params._meta` (`traceparent`, `tracestate`, W3C trace context) and hands
//! its own context on to the server there, so the server's spans join the same trace. Each
//! plugin call is a child span with its verdict; the request's span ends with its answer, with
//! `error.type` when the answer is an error. Spans are batched off the message path.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use serde_json::Value;

use crate::interceptor::{CallTracer, TracedCall};
use crate::protocol::Message;

/// The trace context of one request in flight: its span, current while it lives.
pub type RequestTrace = Context;

pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

/// What a request's span records about it.
pub struct RequestInfo<'a> {
    pub method: &'a str,
    pub session_id: Option<&'a str>,
    pub request_id: &'a str,
    pub protocol_version: Option<&'a str>,
}

impl Tracing {
    /// Exports to the OTLP/HTTP collector at `endpoint` (`http://host:4318`, or the full
    /// `…/v1/traces` URL).
    pub fn start(endpoint: &str, service_name: &str) -> Result<Self, String> {
        let endpoint = match endpoint.trim_end_matches('/') {
            full if full.ends_with("/v1/traces") => full.to_owned(),
            base => format!("{base}/v1/traces"),
        };
        // The exporter's blocking HTTP client makes a runtime of its own: build it off ours.
        let exporter = std::thread::spawn(move || {
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(5))
                .build()
        })
        .join()
        .map_err(|_| "the OTLP exporter could not be built".to_owned())?
        .map_err(|e| e.to_string())?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            )
            .build();
        Ok(Self {
            tracer: provider.tracer("membrane"),
            provider,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// Starts the span of a client's request, continuing the trace its `params._meta` names,
    /// and returns the message to forward (its `_meta` now naming this span) with the span.
    pub fn request(&self, message: &Message, info: RequestInfo) -> (Message, RequestTrace) {
        let mut value = message.to_value().unwrap_or_default();
        let meta = &value["params"]["_meta"];
        let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|key| Some((key.to_owned(), meta[key].as_str()?.to_owned())))
            .collect();
        let parent = self.propagator.extract(&carrier);
        let tool = (info.method == "tools/call")
            .then(|| value["params"]["name"].as_str().map(str::to_owned))
            .flatten();
        let mut attributes = vec![
            KeyValue::new("mcp.method.name", info.method.to_owned()),
            KeyValue::new("jsonrpc.request.id", info.request_id.to_owned()),
            KeyValue::new("jsonrpc.protocol.version", "2.0"),
        ];
        if let Some(id) = info.session_id {
            attributes.push(KeyValue::new("mcp.session.id", id.to_owned()));
        }
        if let Some(version) = info.protocol_version {
            attributes.push(KeyValue::new("mcp.protocol.version", version.to_owned()));
        }
        let name = match &tool {
            Some(tool) => {
                attributes.push(KeyValue::new("gen_ai.tool.name", tool.clone()));
                attributes.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
                format!("{} {tool}", info.method)
            }
            None => info.method.to_owned(),
        };
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        let trace = parent.with_span(span);
        let mut carrier = HashMap::new();
        self.propagator.inject_context(&trace, &mut carrier);
        if let Some(params) = value.get_mut("params").and_then(Value::as_object_mut) {
            let meta = params
                .entry("_meta")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(meta) = meta.as_object_mut() {
                for (key, field) in carrier {
                    meta.insert(key, Value::String(field));
                }
            }
        }
        (Message::new(value.to_string()), trace)
    }

    /// Ends a request's span with its answer.
    pub fn answered(trace: RequestTrace, answer: &Message) {
        let span = trace.span();
        if answer.kind() == Some(crate::protocol::MessageKind::Error) {
            let code = answer
                .to_value()
                .ok()
                .and_then(|v| v["error"]["code"].as_i64())
                .unwrap_or_default();
            span.set_attribute(KeyValue::new("error.type", code.to_string()));
            span.set_attribute(KeyValue::new("rpc.response.status_code", code.to_string()));
            span.set_status(Status::error(format!("JSON-RPC error {code}")));
        }
        span.end();
    }

    /// A child span for one plugin call under `trace`; its verdict ends it.
    fn plugin_call(&self, trace: &RequestTrace, plugin: &str) -> PluginCall {
        let span = self
            .tracer
            .span_builder(format!("plugin {plugin}"))
            .with_kind(SpanKind::Internal)
            .with_attributes([KeyValue::new("membrane.plugin", plugin.to_owned())])
            .start_with_context(&self.tracer, trace);
        PluginCall(span)
    }

    /// Sends what is batched, within `timeout` (at shutdown).
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!("traces not all exported at shutdown: {e}");
        }
    }
}

/// Where a message's plugin calls are traced: under its request's span.
pub struct PluginTracer {
    pub tracing: std::sync::Arc<Tracing>,
    pub trace: RequestTrace,
}

impl std::fmt::Debug for PluginTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginTracer")
    }
}

impl CallTracer for PluginTracer {
    fn start(&self, interceptor: &str) -> Box<dyn TracedCall> {
        Box::new(self.tracing.plugin_call(&self.trace, interceptor))
    }
}

/// The span of one plugin call.
pub struct PluginCall(opentelemetry_sdk::trace::Span);

impl TracedCall for PluginCall {
    fn verdict(mut self: Box<Self>, verdict: &str) {
        self.0
            .set_attribute(KeyValue::new("membrane.verdict", verdict.to_owned()));
        self.0.end();
    }
}
