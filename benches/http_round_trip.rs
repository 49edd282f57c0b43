//! Streamable HTTP through `membrane reverse`, against the same upstream used directly: a
//! 1 KiB `tools/call echo` from many concurrent sessions, to the rmcp SDK server over HTTP
//! (HTTP to HTTP, also with every session recorded to a tape) and over stdio (HTTP to stdio,
//! one server process per session). Then the memory membrane holds per idle session.
//!
//! Each round sends one call on every session of one variant at once, and the variants take
//! turns round by round, so machine noise falls on all of them alike. Prints, per variant,
//! the median and p99 of a call's round trip and the calls per second, with ratios to the
//! server used directly over HTTP.
//!
//! Run: `cargo build --release --examples && cargo bench --bench http_round_trip`
//! (`SESSIONS`, `ROUNDS`, `IDLE_SESSIONS` and `IDLE_STDIO_SESSIONS` override the defaults).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::http::{Http, membrane_reverse, rmcp_http_server};
use common::setting;
use serde_json::json;

struct Variant {
    name: &'static str,
    sessions: Vec<Http>,
    samples: Vec<Duration>,
    busy: Duration,
}

impl Variant {
    async fn open(name: &'static str, url: &str, sessions: usize) -> Self {
        let mut opened = Vec::new();
        for _ in 0..sessions {
            let mut session = Http::new(url);
            session.initialize().await;
            opened.push(session);
        }
        Self {
            name,
            sessions: opened,
            samples: Vec::new(),
            busy: Duration::ZERO,
        }
    }

    /// One call on every session at once; returns each call's round trip.
    async fn round(&mut self, id: i64, message: &str) -> Vec<Duration> {
        let started = Instant::now();
        let calls = self.sessions.iter().map(|session| async move {
            let started = Instant::now();
            let answer = session
                .call_tool(id, "echo", json!({"message": message}))
                .await;
            assert_eq!(answer["result"]["content"][0]["text"], message);
            started.elapsed()
        });
        let times = futures::future::join_all(calls).await;
        self.busy += started.elapsed();
        times
    }

    fn quantile(&self, q: f64) -> Duration {
        self.samples[((self.samples.len() - 1) as f64 * q) as usize]
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// What `count` idle sessions add to the RSS of a fresh `membrane reverse ARGS`, per session.
async fn idle_memory(args: &[&str], count: usize) -> f64 {
    let (membrane, url) = membrane_reverse(args).await;
    let mut warm = Http::new(&url);
    warm.initialize().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(membrane.pid());
    let mut idle = Vec::new();
    for _ in 0..count {
        let mut session = Http::new(&url);
        session.initialize().await;
        idle.push(session);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib(membrane.pid());
    // Then the sessions are deleted and as many opened and deleted again: the allocator keeps
    // freed memory, but a leak would grow the second round by as much as the first.
    let mut rounds = Vec::new();
    for _ in 0..2 {
        for session in &idle {
            assert_eq!(session.delete().await.status(), 200);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        rounds.push(rss_kib(membrane.pid()));
        for session in idle.iter_mut() {
            session.session = None;
            session.initialize().await;
        }
    }
    println!(
        "memory: {before} KiB with one session, {after} KiB with {count} more; after deleting them, {} KiB; after opening and deleting {count} again, {} KiB",
        rounds[0], rounds[1]
    );
    after.saturating_sub(before) as f64 / count as f64
}

#[tokio::main]
async fn main() {
    let sessions = setting("SESSIONS", 16);
    let rounds = setting("ROUNDS", 600);
    let idle_sessions = setting("IDLE_SESSIONS", 500);
    let idle_stdio_sessions = setting("IDLE_STDIO_SESSIONS", 100);
    let warm_up = rounds / 10;
    let message = "m".repeat(960);

    let (_server, direct) = rmcp_http_server("127.0.0.1:0").await;
    let (_http_to_http, via_http) = membrane_reverse(&["--upstream", &direct]).await;
    let tapes = tempfile::tempdir().unwrap();
    let (_recorded, via_recorded) = membrane_reverse(&[
        "--upstream",
        &direct,
        "--record",
        tapes.path().to_str().unwrap(),
    ])
    .await;
    let stdio_server = common::rmcp_server().display().to_string();
    let (_http_to_stdio, via_stdio) = membrane_reverse(&["--", &stdio_server]).await;
    let mut variants = [
        Variant::open("rmcp server over HTTP, directly", &direct, sessions).await,
        Variant::open("membrane, HTTP to HTTP", &via_http, sessions).await,
        Variant::open("membrane, HTTP to HTTP, recorded", &via_recorded, sessions).await,
        Variant::open("membrane, HTTP to stdio", &via_stdio, sessions).await,
    ];
    for round in 0..warm_up + rounds {
        for turn in 0..variants.len() {
            let variant = &mut variants[(round + turn) % variants.len()];
            let times = variant.round(round as i64 + 1, &message).await;
            if round >= warm_up {
                variant.samples.extend(times);
            } else {
                variant.busy = Duration::ZERO;
            }
        }
    }
    println!("{sessions} concurrent sessions, {rounds} rounds, 1 KiB echo");
    for variant in variants.iter_mut() {
        variant.samples.sort();
    }
    let base = (
        variants[0].quantile(0.5),
        variants[0].quantile(0.99),
        variants[0].busy,
    );
    for variant in &variants {
        let calls = variant.samples.len() as f64 / variant.busy.as_secs_f64();
        println!(
            "{:<34} median {:>8.1} µs  p99 {:>8.1} µs  {:>7.0} calls/s  ratios: median {:.2}x, p99 {:.2}x, throughput {:.2}x",
            variant.name,
            variant.quantile(0.5).as_secs_f64() * 1e6,
            variant.quantile(0.99).as_secs_f64() * 1e6,
            calls,
            variant.quantile(0.5).as_secs_f64() / base.0.as_secs_f64(),
            variant.quantile(0.99).as_secs_f64() / base.1.as_secs_f64(),
            base.2.as_secs_f64() / variant.busy.as_secs_f64(),
        );
    }
    drop(variants);

    // Memory: a fresh membrane, before and after opening idle sessions (the upstream's own
    // memory, and the stdio servers', are not counted).
    let idle = [
        (
            "HTTP upstream",
            vec!["--upstream", direct.as_str()],
            idle_sessions,
        ),
        (
            "stdio upstream",
            vec!["--", stdio_server.as_str()],
            idle_stdio_sessions,
        ),
    ];
    for (upstream, args, count) in idle {
        let per_session = idle_memory(&args, count).await;
        println!(
            "memory: {count} idle sessions ({upstream}): {per_session:.1} KiB of membrane's RSS per session"
        );
    }
}
