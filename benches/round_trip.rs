//! Round trips through `membrane forward` against the same server used directly, in one run:
//! a 1 KiB `tools/call echo` to the rmcp SDK server, sent and answered one at a time over
//! stdio. Compared: the server alone (baseline), membrane with no plugins (everything on the
//! fast path), and membrane with the tool-guard plugin (every call and answer enters Wasm).
//!
//! Run: `cargo build --release --examples && cargo bench --bench round_trip`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

/// An MCP server process (or membrane in front of one), spoken to in raw lines.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    line: String,
}

impl Peer {
    fn spawn(command: &[String]) -> Self {
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
            child,
            stdin,
            stdout,
            line: String::new(),
        };
        peer.exchange(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}).to_string());
        writeln!(
            peer.stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )
        .unwrap();
        peer
    }

    fn exchange(&mut self, request: &str) -> usize {
        self.stdin.write_all(request.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
        self.line.clear();
        self.stdout.read_line(&mut self.line).unwrap()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn round_trip(c: &mut Criterion) {
    let server = common::rmcp_server().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(
        dir.path(),
        &format!(
            "[[plugins]]\npath = {:?}\n[plugins.config]\ndeny = [\"delete_*\"]\n",
            common::plugin("tool-guard").display().to_string()
        ),
    );
    let membrane = |args: &[&str]| {
        let mut command = vec![common::membrane().to_owned(), "forward".to_owned()];
        command.extend(args.iter().map(|a| a.to_string()));
        command.push("--".into());
        command.push(server.clone());
        command
    };
    let request = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"echo","arguments":{"message":"m".repeat(960)}}})
    .to_string();

    let mut group = c.benchmark_group("echo_round_trip_1KiB");
    for (name, command) in [
        ("baseline: server alone", vec![server.clone()]),
        ("membrane, no plugins", membrane(&[])),
        (
            "membrane + tool-guard",
            membrane(&["--config", config.to_str().unwrap()]),
        ),
    ] {
        let mut peer = Peer::spawn(&command);
        group.bench_function(name, |b| b.iter(|| assert!(peer.exchange(&request) > 1000)));
    }
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
