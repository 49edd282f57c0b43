//! What membrane tells operators beyond its log: [`Metrics`] for Prometheus (counted on the
//! message path without locks, read from the other rooms at scrape time), OpenTelemetry
//! traces of requests and plugin calls ([`Tracing`], over OTLP) and the [`Audit`] stream (one JSON line per verdict other than continue, per settled held message, per
//! reload). The admin API serves the metrics; the app wires the audit stream to the rooms
//! that announce what it records.

mod audit;
mod metrics;
mod traces;

pub use audit::Audit;
pub use metrics::{Ending, Metrics, Scrape};
pub use traces::{PluginTracer, RequestInfo, RequestTrace, Tracing};
