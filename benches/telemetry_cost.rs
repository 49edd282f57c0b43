//! What metrics and tracing cost on a round trip: a 1 KiB `tools/call echo` through
//! `membrane forward` to the rmcp SDK server over stdio, one at a time, with the tool-guard
//! plugin and without plugins, tracing off and on (every request traced and exported over
//! OTLP/HTTP to a receiver in this process, as to a collector on the same host). Metrics are
//! always counted; to see what counting costs, set `MEMBRANE_BASELINE_BIN` to a build from
//! before them (it joins the rotation, tracing off). Variants run interleaved, so machine
//! noise falls on all alike; medians, p90, p99 and ratios are printed.
//!
//! Run: `cargo build --release --examples && cargo bench --bench telemetry_cost`.

#[path = "../tests/common/mod.rs"]
mod common;

mod support;

use std::process::Stdio;

use support::{Peer, config_file, echo_request, forward, interleave, report};

const WARM_UP_ROUNDS: usize = 1_000;
const ROUNDS: usize = 10_000;

/// An OTLP/HTTP receiver on a loopback port that takes every export and forgets it.
fn otlp_receiver() -> String {
    let (address, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(|_: axum::body::Bytes| async { "{}" }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            address.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", ready.recv().unwrap())
}

fn main() {
    let server = common::rmcp_server().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let guard = common::guard_toml(&["delete_*"]);
    let tracing = format!("[telemetry]\notlp_endpoint = {:?}\n", otlp_receiver());
    let configs = [
        ("plain", String::new()),
        ("guard", guard.clone()),
        ("traced", tracing.clone()),
        ("guard-traced", format!("{tracing}{guard}")),
    ]
    .map(|(name, toml)| config_file(dir.path(), name, &toml));
    let membrane = |binary: &str, config: &std::path::Path| forward(binary, config, &server);
    let this = common::membrane();
    let mut peers = vec![
        Peer::spawn("server alone", std::slice::from_ref(&server), Stdio::null()),
        Peer::spawn("no plugins", &membrane(&this, &configs[0]), Stdio::null()),
        Peer::spawn(
            "no plugins, traced",
            &membrane(&this, &configs[2]),
            Stdio::null(),
        ),
        Peer::spawn("tool-guard", &membrane(&this, &configs[1]), Stdio::null()),
        Peer::spawn(
            "tool-guard, traced",
            &membrane(&this, &configs[3]),
            Stdio::null(),
        ),
    ];
    if let Ok(other) = std::env::var("MEMBRANE_BASELINE_BIN") {
        peers.push(Peer::spawn(
            "baseline, no plugins",
            &membrane(&other, &configs[0]),
            Stdio::null(),
        ));
        peers.push(Peer::spawn(
            "baseline, tool-guard",
            &membrane(&other, &configs[1]),
            Stdio::null(),
        ));
    }
    let request = echo_request();
    interleave(&mut peers, &request, WARM_UP_ROUNDS, ROUNDS);
    println!("echo round trip, 1 KiB, {ROUNDS} interleaved rounds");
    report(&mut peers);
}
