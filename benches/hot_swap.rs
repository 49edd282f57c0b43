//! Latency while plugins are swapped under load: two membranes with the tool-guard plugin in
//! front of the rmcp SDK server, measured interleaved (one request to each per round, in
//! rotating order, so machine noise falls on both alike). One keeps its chain; the other is
//! sent SIGHUP every few milliseconds with its config flipped between two policies, so each
//! signal loads a new version of the plugin (from the compile cache: deserialise, instantiate,
//! `init`) and swaps the chain while calls are in flight. Every answer is checked; the swaps
//! that took effect are counted from membrane's log. Prints median, p90 and p99 of both and
//! their ratios.
//!
//! Run: `cargo build --release --examples && cargo bench --bench hot_swap`.

#[path = "../tests/common/mod.rs"]
mod common;

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::{Peer, echo_request, interleave, report};

const WARM_UP_ROUNDS: usize = 1_000;
const ROUNDS: usize = 20_000;
const SWAP_EVERY: Duration = Duration::from_millis(10);

fn main() {
    let server = common::rmcp_server().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let guard = std::fs::read(common::plugin("tool-guard")).unwrap();
    std::fs::write(dir.path().join("guard.wasm"), guard).unwrap();
    let policy = |deny: &str| {
        format!(
            "watch = false\n[[plugins]]\nname = \"guard\"\npath = \"guard.wasm\"\n[plugins.config]\ndeny = [{deny}]\n"
        )
    };
    let steady = common::write_config(dir.path(), &policy("\"delete_*\""));
    let swapped = dir.path().join("swapped.toml");
    std::fs::write(&swapped, policy("\"delete_*\"")).unwrap();
    let log = dir.path().join("swapped.log");

    let membrane = |config: &std::path::Path| {
        let mut command = vec![common::membrane().to_owned(), "forward".to_owned()];
        command.extend(["--config".to_owned(), config.display().to_string()]);
        command.extend(["--".to_owned(), server.clone()]);
        command
    };
    let mut peers = [
        Peer::spawn(
            "membrane, no swaps (baseline)",
            &membrane(&steady),
            Stdio::null(),
        ),
        Peer::spawn(
            "membrane, swapped every 10 ms",
            &membrane(&swapped),
            std::fs::File::create(&log).unwrap().into(),
        ),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let signals = Arc::new(AtomicUsize::new(0));
    let swapper = {
        let (stop, signals) = (stop.clone(), signals.clone());
        let pid = peers[1].child.id().to_string();
        let staging = dir.path().join("swapped.staging");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = signals.fetch_add(1, Ordering::Relaxed);
                let deny = if n % 2 == 0 {
                    "\"delete_*\", \"drop_*\""
                } else {
                    "\"delete_*\""
                };
                std::fs::write(&staging, policy(deny)).unwrap();
                std::fs::rename(&staging, &swapped).unwrap();
                let sent = std::process::Command::new("kill")
                    .args(["-HUP", &pid])
                    .status();
                assert!(sent.unwrap().success());
                std::thread::sleep(SWAP_EVERY);
            }
        })
    };

    let request = echo_request();
    interleave(&mut peers, &request, WARM_UP_ROUNDS, ROUNDS);
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    drop(peers[1].child.kill());
    let _ = peers[1].child.wait();

    let log = std::fs::read_to_string(&log).unwrap();
    let swaps = log.matches("reloaded plugins").count();
    let rejected = log.matches("reload rejected").count();
    println!(
        "echo round trip, 1 KiB, {ROUNDS} interleaved rounds; {} SIGHUPs, {swaps} swaps, {rejected} rejected, 0 failed calls",
        signals.load(Ordering::Relaxed)
    );
    assert_eq!(rejected, 0, "{log}");
    report(&mut peers);
}
