//! What recording costs on a round trip: a 1 KiB `tools/call echo` through `membrane forward`
//! to the rmcp SDK server over stdio, one at a time, with and without the tool-guard plugin,
//! each recorded to a tape (`[record]`, every session) and not. Set `MEMBRANE_BASELINE_BIN`
//! to a build from before recording existed to add it to the rotation. Variants run
//! interleaved, so machine noise falls on all alike; medians, p90, p99 and ratios are printed.
//!
//! Run: `cargo build --release --examples && cargo bench --bench record_cost`.

#[path = "../tests/common/mod.rs"]
mod common;

mod support;

use std::process::Stdio;

use support::{Peer, config_file, echo_request, forward, interleave, report};

const WARM_UP_ROUNDS: usize = 1_000;
const ROUNDS: usize = 10_000;

fn main() {
    let server = common::rmcp_server().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let guard = common::guard_toml(&["delete_*"]);
    let record = format!(
        "[record]\ndir = {:?}\n",
        dir.path().join("tapes").display().to_string()
    );
    let configs = [
        ("plain", String::new()),
        ("recorded", record.clone()),
        ("guard", guard.clone()),
        ("guard-recorded", format!("{record}{guard}")),
    ]
    .map(|(name, toml)| config_file(dir.path(), name, &toml));
    let membrane = |binary: &str, config: &std::path::Path| forward(binary, config, &server);
    let this = common::membrane();
    let mut peers = vec![
        Peer::spawn("server alone", std::slice::from_ref(&server), Stdio::null()),
        Peer::spawn("no plugins", &membrane(&this, &configs[0]), Stdio::null()),
        Peer::spawn(
            "no plugins, recorded",
            &membrane(&this, &configs[1]),
            Stdio::null(),
        ),
        Peer::spawn("tool-guard", &membrane(&this, &configs[2]), Stdio::null()),
        Peer::spawn(
            "tool-guard, recorded",
            &membrane(&this, &configs[3]),
            Stdio::null(),
        ),
    ];
    if let Ok(other) = std::env::var("MEMBRANE_BASELINE_BIN") {
        peers.push(Peer::spawn(
            "baseline, tool-guard",
            &membrane(&other, &configs[2]),
            Stdio::null(),
        ));
    }
    let request = echo_request();
    interleave(&mut peers, &request, WARM_UP_ROUNDS, ROUNDS);
    println!("echo round trip, 1 KiB, {ROUNDS} interleaved rounds");
    report(&mut peers);
}
