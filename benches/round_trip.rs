//! Round trips through `membrane forward` against the same server used directly: a 1 KiB
//! `tools/call echo` to the rmcp SDK server over stdio, one at a time. Compared: the server
//! alone (baseline), membrane with no plugins (everything on the fast path), and membrane with
//! the tool-guard plugin (every call enters Wasm).
//!
//! The three are measured interleaved (each round sends one request to each, in rotating
//! order), so machine noise falls on all of them alike; sequential runs on a 2-core machine
//! moved the ratio by ±25 %. Prints median, p90 and p99 per variant, and median ratios.
//!
//! Run: `cargo build --release --examples && cargo bench --bench round_trip`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const WARM_UP_ROUNDS: usize = 2_000;
const ROUNDS: usize = 20_000;

/// An MCP server process (or membrane in front of one), spoken to in raw lines.
struct Peer {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    line: String,
    samples: Vec<Duration>,
}

impl Peer {
    fn spawn(name: &'static str, command: &[String]) -> Self {
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .env("MEMBRANE_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the peer");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut peer = Self {
            name,
            child,
            stdin,
            stdout,
            line: String::new(),
            samples: Vec::with_capacity(ROUNDS),
        };
        let initialize = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}});
        peer.exchange(&initialize.to_string());
        writeln!(
            peer.stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )
        .unwrap();
        peer
    }

    fn exchange(&mut self, request: &str) -> Duration {
        let started = Instant::now();
        self.stdin.write_all(request.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
        self.line.clear();
        self.stdout.read_line(&mut self.line).unwrap();
        started.elapsed()
    }

    fn percentile(&self, p: f64) -> Duration {
        self.samples[((self.samples.len() - 1) as f64 * p) as usize]
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let server = common::rmcp_server().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let guard = format!(
        "[[plugins]]\npath = {:?}\n[plugins.config]\ndeny = [\"delete_*\"]\n",
        common::plugin("tool-guard").display().to_string()
    );
    let config = common::write_config(dir.path(), &guard);
    let membrane = |args: &[&str]| {
        let mut command = vec![common::membrane().to_owned(), "forward".to_owned()];
        command.extend(args.iter().map(|a| a.to_string()));
        command.extend(["--".to_owned(), server.clone()]);
        command
    };
    let mut peers = [
        Peer::spawn("server alone (baseline)", std::slice::from_ref(&server)),
        Peer::spawn("membrane, no plugins", &membrane(&[])),
        Peer::spawn(
            "membrane + tool-guard",
            &membrane(&["--config", config.to_str().unwrap()]),
        ),
    ];
    let request = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"echo","arguments":{"message":"m".repeat(960)}}})
    .to_string();

    for round in 0..WARM_UP_ROUNDS + ROUNDS {
        for turn in 0..peers.len() {
            let peer = &mut peers[(round + turn) % 3];
            let elapsed = peer.exchange(&request);
            assert!(peer.line.contains("mmmm"), "{}: {}", peer.name, peer.line);
            if round >= WARM_UP_ROUNDS {
                peer.samples.push(elapsed);
            }
        }
    }

    println!("echo round trip, 1 KiB, {ROUNDS} interleaved rounds");
    for peer in &mut peers {
        peer.samples.sort();
    }
    let baseline = peers[0].percentile(0.5).as_secs_f64();
    for peer in &peers {
        let median = peer.percentile(0.5);
        println!(
            "{:<26} median {:>7.1} µs  p90 {:>7.1} µs  p99 {:>7.1} µs  median ratio {:.2}x",
            peer.name,
            median.as_secs_f64() * 1e6,
            peer.percentile(0.9).as_secs_f64() * 1e6,
            peer.percentile(0.99).as_secs_f64() * 1e6,
            median.as_secs_f64() / baseline,
        );
    }
}
