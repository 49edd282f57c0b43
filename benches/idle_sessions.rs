//! Memory per idle session, and many sessions at once: `membrane reverse` in front of the rmcp
//! SDK server over HTTP opens `SESSIONS` sessions (default 10 000; each an initialize and its
//! `notifications/initialized`, 64 at a time), then leaves them idle. The figure is membrane's
//! resident memory with them all open, less its memory before, per session, for each session
//! store (memory, a SQLite file, a real `redis-server` when one is installed). A sample of the
//! sessions then calls a tool, to show they all still work. With `MEMBRANE_BASELINE_BIN` set to
//! another build, that build is measured in the same run (memory store) as the baseline.
//!
//! Run: `cargo build --release --examples && cargo bench --bench idle_sessions`
//!
//! Where the memory goes: `scripts/heaptrack-membrane.sh` runs membrane under heaptrack in
//! place of the binary (`MEMBRANE_BIN`); what is still allocated when it is killed with its
//! sessions open is what they hold, by allocation site.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::http::{Http, membrane_build_reverse, rmcp_http_server};
use common::services::Redis;
use common::{membrane, memory_kib, setting, write_config};
use futures::StreamExt;
use serde_json::json;

/// Sessions opened at once.
const CONCURRENCY: usize = 64;

struct Figures {
    label: String,
    per_session_kib: f64,
    before_kib: u64,
    with_sessions_kib: u64,
    open_secs: f64,
    working: usize,
}

async fn measure(
    label: &str,
    build: &str,
    store: &str,
    upstream: &str,
    sessions: usize,
) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[session]\nmax_sessions = {}\n{store}\n[http]\nmax_connections = 4096\n",
        sessions + 16
    );
    let config = write_config(dir.path(), &toml);
    let args = ["--config", config.to_str().unwrap(), "--upstream", upstream];
    let (membrane, url) = membrane_build_reverse(
        build,
        "127.0.0.1:0",
        &args,
        &[("MEMBRANE_LOG", "membrane=info")],
    )
    .await;
    let client = common::http_client();
    // One session first, so what every session shares (pools, buffers) is counted before.
    let mut first = Http::with_client(&url, client.clone());
    first.initialize().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = memory_kib(membrane.pid()).0;
    let started = Instant::now();
    let opened: Vec<Http> = futures::stream::iter(0..sessions)
        .map(|_| {
            let (url, client) = (url.clone(), client.clone());
            async move {
                let mut session = Http::with_client(&url, client);
                session.initialize().await;
                session
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_sessions = memory_kib(membrane.pid()).0;
    let mut working = 0;
    for (n, session) in opened.iter().step_by((sessions / 100).max(1)).enumerate() {
        let answer = session
            .call_tool(n as i64 + 1, "echo", json!({"message": "still here"}))
            .await;
        if answer["result"]["content"][0]["text"] == "still here" {
            working += 1;
        }
    }
    let figures = Figures {
        label: label.to_owned(),
        per_session_kib: with_sessions.saturating_sub(before) as f64 / sessions as f64,
        before_kib: before,
        with_sessions_kib: with_sessions,
        open_secs,
        working,
    };
    drop(membrane);
    figures
}

#[tokio::main]
async fn main() {
    common::tls_provider();
    let sessions = setting("SESSIONS", 10_000);
    let (_upstream, upstream) = rmcp_http_server("127.0.0.1:0").await;
    let mut runs = vec![(
        "this build, memory store".to_owned(),
        membrane(),
        String::new(),
    )];
    runs.push((
        "this build, SQLite store".into(),
        membrane(),
        "store = \"sqlite:sessions.db\"".into(),
    ));
    let redis = match std::path::Path::new("/usr/bin/redis-server").exists() {
        true => Some(Redis::start().await),
        false => None,
    };
    if let Some(redis) = &redis {
        runs.push((
            "this build, Redis store".into(),
            membrane(),
            format!("store = {:?}", redis.url()),
        ));
    }
    if let Ok(baseline) = std::env::var("MEMBRANE_BASELINE_BIN") {
        runs.insert(
            0,
            (
                "baseline build, memory store".into(),
                baseline,
                String::new(),
            ),
        );
    }
    println!("{sessions} idle sessions through membrane reverse (rmcp server over HTTP upstream)");
    for (label, build, store) in runs {
        let f = measure(&label, &build, &store, &upstream, sessions).await;
        println!(
            "{:<32} {:>7.1} KiB/session   RSS {:>7} KiB before, {:>8} KiB with sessions   opened in {:>5.1} s   {}/{} sampled sessions answered",
            f.label,
            f.per_session_kib,
            f.before_kib,
            f.with_sessions_kib,
            f.open_secs,
            f.working,
            sessions.div_ceil((sessions / 100).max(1)),
        );
    }
}
