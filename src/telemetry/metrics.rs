//! [`Metrics`]: the series membrane exports in the Prometheus text format, every one named
//! `membrane_…`. What the message path counts is counted lock-free (messages in a fixed table
//! of atomics by direction, kind and method, the method from a bounded set; sessions by
//! transport and ending); what other rooms already count (plugins' verdicts and latency, held
//! messages, the store, reloads) is read from them at scrape time. `prometheus-client` does
//! the encoding.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::protocol::{Direction, MessageKind};
use crate::transport::TransportType;
#[cfg(feature = "wasm")]
use crate::wasm::{LATENCY_BUCKETS_US, PluginInfo};

/// The methods counted by name; any other is counted as `other`, so a client cannot grow the
/// label set.
const METHODS: [&str; 28] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/list",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/resources/updated",
    "notifications/resources/list_changed",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/roots/list_changed",
];
const KINDS: [&str; 5] = ["request", "notification", "response", "error", "batch"];
const DIRECTIONS: [&str; 2] = ["client_to_server", "server_to_client"];
const TRANSPORTS: [&str; 2] = ["stdio", "streamable_http"];
/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    ClientLeft,
    UpstreamLeft,
    Closed,
}
const ENDINGS: [&str; 3] = ["client_left", "upstream_left", "closed"];

type Table<const N: usize> = [AtomicU64; N];

/// What the message path counts.
#[derive(Debug)]
pub struct Metrics {
    /// Messages by direction, kind and method (the last index: `other`).
    messages: Vec<AtomicU64>,
    /// Sessions opened, by client transport then upstream transport.
    opened: Table<4>,
    /// Sessions ended, by client transport and ending.
    closed: Table<6>,
    /// Answers to client requests: time from the request to its answer, in seconds.
    upstream_latency: Histogram,
    /// Verdicts of interceptors in audit mode, not enforced, by interceptor and verdict: rare
    /// (an interceptor under audit that would have acted), so behind a lock.
    unenforced: parking_lot::Mutex<BTreeMap<(Arc<str>, &'static str), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            messages: (0..DIRECTIONS.len() * KINDS.len() * (METHODS.len() + 1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            opened: Default::default(),
            closed: Default::default(),
            upstream_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            unenforced: Default::default(),
        }
    }
}

fn transport_index(transport: TransportType) -> usize {
    match transport {
        TransportType::Stdio => 0,
        TransportType::StreamableHttp => 1,
    }
}

impl Metrics {
    /// Counts a message; `method` is its own, or for an answer its request's.
    #[inline]
    pub fn message(&self, direction: Direction, kind: MessageKind, method: Option<&str>) {
        let direction = direction as usize;
        let method = method
            .and_then(|m| METHODS.iter().position(|known| *known == m))
            .unwrap_or(METHODS.len());
        let index = (direction * KINDS.len() + kind as usize) * (METHODS.len() + 1) + method;
        self.messages[index].fetch_add(1, Relaxed);
    }

    pub fn session_opened(&self, client: TransportType, upstream: TransportType) {
        self.opened[transport_index(client) * 2 + transport_index(upstream)].fetch_add(1, Relaxed);
    }

    pub fn session_closed(&self, client: TransportType, ending: Ending) {
        self.closed[transport_index(client) * 3 + ending as usize].fetch_add(1, Relaxed);
    }

    /// An answer to a client's request came `seconds` after the request.
    pub fn upstream_answered(&self, seconds: f64) {
        self.upstream_latency.observe(seconds);
    }

    /// Counts a verdict an interceptor in audit mode gave and that was not enforced.
    pub fn unenforced(&self, interceptor: &Arc<str>, verdict: &'static str) {
        *self
            .unenforced
            .lock()
            .entry((interceptor.clone(), verdict))
            .or_default() += 1;
    }
}

/// Everything a scrape shows, read from the rooms that keep it.
#[derive(Debug, Default)]
pub struct Scrape {
    pub sessions_active: u64,
    pub sessions_rejected: u64,
    pub unmatched_answers: u64,
    pub held_now: u64,
    /// Settled held messages by outcome.
    pub held_outcomes: Vec<(&'static str, u64)>,
    pub reloads_done: u64,
    pub reloads_refused: u64,
    #[cfg(feature = "wasm")]
    pub plugins: Vec<PluginInfo>,
    pub store_latency: Option<Histogram>,
    pub store_errors: u64,
    /// Tapes opened, lines written and lines dropped, when sessions are recorded.
    pub tapes: Option<[u64; 3]>,
}

impl Metrics {
    /// The Prometheus text exposition of these counts and `scrape`.
    pub fn encode(&self, scrape: Scrape) -> String {
        let mut registry = Registry::with_prefix("membrane");
        registry.register(
            "upstream_latency_seconds",
            "Time from a client's request to the server's answer",
            self.upstream_latency.clone(),
        );
        if let Some(store) = &scrape.store_latency {
            registry.register(
                "store_latency_seconds",
                "Time of each call to the session store",
                store.clone(),
            );
        }
        registry.register_collector(Box::new(Counts {
            metrics: self.snapshot(),
            scrape,
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String");
        text
    }

    fn snapshot(&self) -> Snapshot {
        let read = |table: &[AtomicU64]| table.iter().map(|c| c.load(Relaxed)).collect();
        Snapshot {
            messages: read(&self.messages),
            opened: read(&self.opened),
            closed: read(&self.closed),
            unenforced: self.unenforced.lock().clone(),
        }
    }
}

#[derive(Debug)]
struct Snapshot {
    messages: Vec<u64>,
    opened: Vec<u64>,
    closed: Vec<u64>,
    unenforced: BTreeMap<(Arc<str>, &'static str), u64>,
}

#[derive(Debug)]
struct Counts {
    metrics: Snapshot,
    scrape: Scrape,
}

type Labels = Vec<(&'static str, String)>;

/// One series of a family: its labels and value.
fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value as i64).encode(metric)
}

impl Collector for Counts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (m, s) = (&self.metrics, &self.scrape);
        let messages = DIRECTIONS.iter().enumerate().flat_map(|(d, direction)| {
            KINDS.iter().enumerate().flat_map(move |(k, kind)| {
                let methods = METHODS.iter().copied().chain(["other"]).enumerate();
                methods.filter_map(move |(i, method)| {
                    let count = m.messages[(d * KINDS.len() + k) * (METHODS.len() + 1) + i];
                    (count > 0).then(|| {
                        let pairs = [
                            ("direction", *direction),
                            ("kind", *kind),
                            ("method", method),
                        ];
                        (labels(pairs), count)
                    })
                })
            })
        });
        counter_family(&mut encoder, "messages", "Messages that arrived", messages)?;
        let opened = (0..4).map(|i| {
            let pairs = [
                ("client", TRANSPORTS[i / 2]),
                ("upstream", TRANSPORTS[i % 2]),
            ];
            (labels(pairs), m.opened[i])
        });
        counter_family(&mut encoder, "sessions_opened", "Sessions opened", opened)?;
        let closed = (0..6).map(|i| {
            let pairs = [("client", TRANSPORTS[i / 3]), ("reason", ENDINGS[i % 3])];
            (labels(pairs), m.closed[i])
        });
        counter_family(
            &mut encoder,
            "sessions_closed",
            "Sessions ended, by why",
            closed,
        )?;
        gauge(
            &mut encoder,
            "sessions_active",
            "Sessions served now",
            s.sessions_active,
        )?;
        counter_family(
            &mut encoder,
            "sessions_rejected",
            "Sessions refused at the session limit",
            [(Labels::new(), s.sessions_rejected)],
        )?;
        counter_family(
            &mut encoder,
            "unmatched_answers",
            "Answers dropped because no request awaited them",
            [(Labels::new(), s.unmatched_answers)],
        )?;
        gauge(
            &mut encoder,
            "held_messages",
            "Messages held for approval now",
            s.held_now,
        )?;
        let outcomes = s
            .held_outcomes
            .iter()
            .map(|(outcome, n)| (labels([("outcome", *outcome)]), *n));
        counter_family(
            &mut encoder,
            "held_settled",
            "Held messages settled, by outcome",
            outcomes,
        )?;
        let reloads = [
            (labels([("outcome", "done")]), s.reloads_done),
            (labels([("outcome", "refused")]), s.reloads_refused),
        ];
        counter_family(
            &mut encoder,
            "reloads",
            "Reloads of the plugin chain",
            reloads,
        )?;
        counter_family(
            &mut encoder,
            "store_errors",
            "Calls to the session store that failed or timed out",
            [(Labels::new(), s.store_errors)],
        )?;
        let unenforced = m
            .unenforced
            .iter()
            .map(|((plugin, verdict), n)| (labels([("plugin", plugin), ("verdict", verdict)]), *n));
        counter_family(
            &mut encoder,
            "plugin_unenforced_verdicts",
            "Verdicts of plugins in audit mode, logged and not enforced",
            unenforced,
        )?;
        if let Some([tapes, lines, dropped]) = s.tapes {
            counter_family(
                &mut encoder,
                "tapes",
                "Tapes of sessions recorded",
                [(Labels::new(), tapes)],
            )?;
            counter_family(
                &mut encoder,
                "tape_lines",
                "Tape lines written",
                [(Labels::new(), lines)],
            )?;
            counter_family(
                &mut encoder,
                "tape_lines_dropped",
                "Tape lines dropped (writer behind, disk full, a cap reached); never messages",
                [(Labels::new(), dropped)],
            )?;
        }
        #[cfg(feature = "wasm")]
        self.encode_plugins(&mut encoder)?;
        Ok(())
    }
}

#[cfg(feature = "wasm")]
impl Counts {
    fn encode_plugins(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let plugins = &self.scrape.plugins;
        let verdicts = plugins.iter().flat_map(|p| {
            let m = &p.metrics;
            [
                ("continue", m.continued),
                ("modify", m.modified),
                ("block", m.blocked),
                ("mock", m.mocked),
                ("pause", m.paused),
                ("delay", m.delayed),
            ]
            .map(|(verdict, n)| (labels([("plugin", &p.name), ("verdict", verdict)]), n))
        });
        counter_family(
            encoder,
            "plugin_verdicts",
            "Plugin calls, by verdict",
            verdicts,
        )?;
        let errors = plugins.iter().flat_map(|p| {
            let m = &p.metrics;
            [
                ("trap", m.traps),
                ("timeout", m.timeouts),
                ("bad_action", m.bad_actions),
                ("unavailable", m.unavailable),
            ]
            .map(|(error, n)| (labels([("plugin", &p.name), ("error", error)]), n))
        });
        counter_family(
            encoder,
            "plugin_errors",
            "Plugin calls that failed, by why",
            errors,
        )?;
        let mut latency = encoder.encode_descriptor(
            "plugin_call_seconds",
            "Time of each plugin call",
            None,
            MetricType::Histogram,
        )?;
        for p in plugins {
            let m = &p.metrics;
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_US
                .iter()
                .map(|us| *us as f64 / 1e6)
                .chain([f64::MAX])
                .zip(m.latency)
                .collect();
            let series = labels([("plugin", &p.name)]);
            latency.encode_family(&series)?.encode_histogram::<Labels>(
                m.latency_sum.as_secs_f64(),
                m.calls,
                &buckets,
                None,
            )?;
        }
        let in_use = plugins
            .iter()
            .map(|p| (labels([("plugin", &p.name)]), p.instances_in_use as u64));
        let mut family = encoder.encode_descriptor(
            "plugin_instances",
            "Plugin instances in use now",
            None,
            MetricType::Gauge,
        )?;
        for (series, n) in in_use {
            ConstGauge::new(n as i64).encode(family.encode_family(&series)?)?;
        }
        Ok(())
    }
}
