//! Round trips through `membrane forward` against the same server used directly: a 1 KiB
//! `tools/call echo` to the rmcp SDK server over stdio, one at a time. Compared: the server
//! alone (baseline), membrane with no plugins (everything on the fast path), and membrane with
//! the tool-guard plugin (every call enters Wasm).
//!
//! The three are measured interleaved (each round sends one request to each, in rotating
//! order), so machine noise falls on all of them alike; sequential runs on a 2-core machine
//! moved the ratio by ±25 %. Prints median, p90 and p99 per variant, and median ratios.
//!
//! With `MEMBRANE_BASELINE_BIN` set to another build of membrane, that build joins the rotation
//! (no plugins, and with tool-guard), so two builds are compared in one run. A build on another
//! contract takes its own tool-guard from `MEMBRANE_BASELINE_PLUGINS` (a `plugins/dist`).
//!
//! Run: `cargo build --release --examples && cargo bench --bench round_trip`.

#[path = "../tests/common/mod.rs"]
mod common;

mod support;

use std::process::Stdio;

use support::{Peer, echo_request, interleave, report};

const WARM_UP_ROUNDS: usize = 2_000;
const ROUNDS: usize = 20_000;

fn main() {
    let server = common::rmcp_server().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let guard = format!(
        "[[plugins]]\npath = {:?}\n[plugins.config]\ndeny = [\"delete_*\"]\n",
        common::plugin("tool-guard").display().to_string()
    );
    let config = common::write_config(dir.path(), &guard);
    let membrane = |binary: &str, args: &[&str]| {
        let mut command = vec![binary.to_owned(), "forward".to_owned()];
        command.extend(args.iter().map(|a| a.to_string()));
        command.extend(["--".to_owned(), server.clone()]);
        command
    };
    let guarded = ["--config", config.to_str().unwrap()];
    let this = common::membrane();
    let mut peers = vec![
        Peer::spawn(
            "server alone (baseline)",
            std::slice::from_ref(&server),
            Stdio::null(),
        ),
        Peer::spawn("membrane, no plugins", &membrane(&this, &[]), Stdio::null()),
        Peer::spawn(
            "membrane + tool-guard",
            &membrane(&this, &guarded),
            Stdio::null(),
        ),
    ];
    let baseline_guard = std::env::var("MEMBRANE_BASELINE_PLUGINS").map(|dist| {
        let guard = format!(
            "[[plugins]]\npath = {:?}\n[plugins.config]\ndeny = [\"delete_*\"]\n",
            format!("{dist}/tool_guard.wasm")
        );
        let toml = format!("{}.baseline.toml", config.display());
        std::fs::write(&toml, guard).unwrap();
        toml
    });
    let baseline_guarded = [
        "--config",
        baseline_guard
            .as_deref()
            .unwrap_or(config.to_str().unwrap()),
    ];
    if let Ok(other) = std::env::var("MEMBRANE_BASELINE_BIN") {
        peers.push(Peer::spawn(
            "baseline build, no plugins",
            &membrane(&other, &[]),
            Stdio::null(),
        ));
        peers.push(Peer::spawn(
            "baseline build + tool-guard",
            &membrane(&other, &baseline_guarded),
            Stdio::null(),
        ));
    }
    let request = echo_request();

    interleave(&mut peers, &request, WARM_UP_ROUNDS, ROUNDS);

    println!("echo round trip, 1 KiB, {ROUNDS} interleaved rounds");
    report(&mut peers);
}
