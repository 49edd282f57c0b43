//! What the load benchmarks share: [`Peer`], an MCP server process (or membrane in front of
//! one) spoken to in raw lines, one request at a time, keeping each round trip's duration;
//! and the command line of `membrane forward` with a config file written for it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// An MCP server process (or membrane in front of one), spoken to in raw lines.
pub struct Peer {
    pub name: &'static str,
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub line: String,
    pub samples: Vec<Duration>,
}

impl Peer {
    /// Spawns `command` (its log to `stderr`) and does the MCP handshake.
    pub fn spawn(name: &'static str, command: &[String], stderr: Stdio) -> Self {
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            // Warnings, plus the app's reload and metrics lines.
            .env("MEMBRANE_LOG", "warn,membrane::app=info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
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
            samples: Vec::new(),
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

    pub fn exchange(&mut self, request: &str) -> Duration {
        let started = Instant::now();
        self.stdin.write_all(request.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
        self.line.clear();
        self.stdout.read_line(&mut self.line).unwrap();
        started.elapsed()
    }

    /// The `p` quantile of the samples, once sorted.
    pub fn percentile(&self, p: f64) -> Duration {
        self.samples[((self.samples.len() - 1) as f64 * p) as usize]
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The request every load benchmark sends: a `tools/call echo` of 1 KiB.
pub fn echo_request() -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"echo","arguments":{"message":"m".repeat(960)}}})
    .to_string()
}

/// Sends `request` to every peer in turn, round after round (rotating who goes first), and
/// keeps each answer's time after the first `warm_up` rounds: machine noise falls on all alike.
pub fn interleave(peers: &mut [Peer], request: &str, warm_up: usize, rounds: usize) {
    let count = peers.len();
    for round in 0..warm_up + rounds {
        for turn in 0..count {
            let peer = &mut peers[(round + turn) % count];
            let elapsed = peer.exchange(request);
            assert!(peer.line.contains("mmmm"), "{}: {}", peer.name, peer.line);
            if round >= warm_up {
                peer.samples.push(elapsed);
            }
        }
    }
}

/// Sorts each peer's samples and prints median, p90, p99 and ratios to the first peer.
pub fn report(peers: &mut [Peer]) {
    for peer in peers.iter_mut() {
        peer.samples.sort();
    }
    let (median, p99) = (peers[0].percentile(0.5), peers[0].percentile(0.99));
    for peer in peers.iter() {
        println!(
            "{:<30} median {:>7.1} µs  p90 {:>7.1} µs  p99 {:>7.1} µs  ratios: median {:.2}x, p99 {:.2}x",
            peer.name,
            peer.percentile(0.5).as_secs_f64() * 1e6,
            peer.percentile(0.9).as_secs_f64() * 1e6,
            peer.percentile(0.99).as_secs_f64() * 1e6,
            peer.percentile(0.5).as_secs_f64() / median.as_secs_f64(),
            peer.percentile(0.99).as_secs_f64() / p99.as_secs_f64(),
        );
    }
}

/// Writes `toml` as `dir/name.toml` and returns its path.
#[allow(dead_code)] // for the benchmarks that run membrane with configs
pub fn config_file(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

/// `binary forward --config config -- server`.
#[allow(dead_code)]
pub fn forward(binary: &str, config: &Path, server: &str) -> Vec<String> {
    let config = config.display().to_string();
    [binary, "forward", "--config", &config, "--", server]
        .map(str::to_owned)
        .to_vec()
}
