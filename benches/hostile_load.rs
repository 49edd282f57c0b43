//! A well-behaved client's latency through `membrane reverse` while hostile clients of three
//! kinds hold connections open at once: headers sent a byte a second (slowloris), bodies
//! announced at 8 MiB that stop after 512 KiB, and clients that open a session of their own,
//! ask for a 1 MB answer and never read it. Each hostile connection that membrane closes is opened again, so the attack
//! holds for the whole measurement. Membrane is in front of the rmcp SDK server over HTTP,
//! with its default bounds.
//!
//! The well-behaved client makes 1 KiB `tools/call echo` calls, one at a time: first alone,
//! then under attack, then alone again; the figures are its median and p99 under attack as a
//! ratio to the alone phases together, membrane's memory under attack and at its peak, and the
//! calls that failed (there must be none).
//!
//! Run: `cargo build --release --examples && cargo bench --bench hostile_load`
//! (`HOSTILE` connections of each kind, default 200; `CALLS` per phase, default 2000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::http::{Http, membrane_reverse, raw_post_head, rmcp_http_server};
use common::{memory_kib, setting};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `calls` echo calls one after another; their round trips, and how many failed.
async fn measure(client: &Http, first_id: i64, calls: usize) -> (Vec<Duration>, usize) {
    let message = "m".repeat(960);
    let mut samples = Vec::with_capacity(calls);
    let mut failed = 0;
    for n in 0..calls as i64 {
        let started = Instant::now();
        let answer = client
            .call_tool(first_id + n, "echo", json!({"message": message}))
            .await;
        samples.push(started.elapsed());
        if answer["result"]["content"][0]["text"] != message {
            failed += 1;
        }
    }
    (samples, failed)
}

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q) as usize]
}

/// One hostile connection of `kind`, opened again whenever membrane closes it.
async fn hostile(kind: &'static str, url: String) {
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "big", "arguments": {"bytes": 1_000_000}}})
    .to_string();
    loop {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let Ok(mut stream) = socket.connect(address.parse().unwrap()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let head = |extra: &str, length: usize| {
            let version = format!("Mcp-Protocol-Version: 2025-06-18\r\n{extra}");
            raw_post_head(&address, &version, length)
        };
        let _ = match kind {
            "slowloris" => {
                async {
                    for byte in head("", 10).bytes() {
                        stream.write_all(&[byte]).await?;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Ok::<_, std::io::Error>(())
                }
                .await
            }
            "half-body" => {
                async {
                    stream.write_all(head("", 8 << 20).as_bytes()).await?;
                    stream.write_all(&vec![b' '; 512 << 10]).await?;
                    // Then nothing: wait for membrane to give up on it.
                    let mut sink = [0u8; 1024];
                    while stream.read(&mut sink).await? > 0 {}
                    Ok(())
                }
                .await
            }
            _ => {
                // A session of its own (membrane may ask it to come back later).
                let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": common::initialize_params("2025-06-18")});
                let opened = Http::new(&url).post(&init).await;
                let Some(session) = opened.headers().get("mcp-session-id").cloned() else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let session = session.to_str().unwrap().to_owned();
                async {
                    let extra = format!("Mcp-Session-Id: {session}\r\n");
                    stream.write_all(head(&extra, big.len()).as_bytes()).await?;
                    stream.write_all(big.as_bytes()).await?;
                    // Never read; wait for membrane to drop the connection.
                    std::future::pending::<()>().await;
                    Ok(())
                }
                .await
            }
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() {
    let (hostile_each, calls) = (setting("HOSTILE", 200), setting("CALLS", 2000));
    let (_server, upstream) = rmcp_http_server("127.0.0.1:0").await;
    let (membrane, url) = membrane_reverse(&["--upstream", &upstream]).await;
    let pid = membrane.pid();
    let mut client = Http::new(&url);
    client.initialize().await;

    let (mut alone, failed_alone) = measure(&client, 1, calls).await;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rss_before = mib(memory_kib(pid).0);

    // The attack runs on threads of its own, so the client's runtime is not the attackers'.
    let attackers = url.clone();
    let attack = std::thread::spawn(move || {
        let url = attackers;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for kind in ["slowloris", "half-body", "non-reader"] {
                for _ in 0..hostile_each {
                    tokio::spawn(hostile(kind, url.clone()));
                }
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut attacked, failed_attacked) = measure(&client, 100_000, calls).await;
    let rss_attacked = mib(memory_kib(pid).0);
    drop(attack); // detached: the process ends with the benchmark
    let (again, failed_again) = measure(&client, 200_000, calls).await;
    alone.extend(again);
    let peak = mib(memory_kib(pid).1);

    let (alone_p50, alone_p99) = (quantile(&mut alone, 0.5), quantile(&mut alone, 0.99));
    let (p50, p99) = (quantile(&mut attacked, 0.5), quantile(&mut attacked, 0.99));
    println!(
        "{hostile_each} hostile connections of each kind (slowloris, half-sent 8 MiB bodies, non-readers of 1 MB answers), 1 KiB echo, {calls} calls per phase"
    );
    println!(
        "alone:        median {:>8.1} µs  p99 {:>8.1} µs",
        alone_p50.as_secs_f64() * 1e6,
        alone_p99.as_secs_f64() * 1e6
    );
    println!(
        "under attack: median {:>8.1} µs  p99 {:>8.1} µs  ratios: median {:.2}x, p99 {:.2}x",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        p50.as_secs_f64() / alone_p50.as_secs_f64(),
        p99.as_secs_f64() / alone_p99.as_secs_f64()
    );
    println!(
        "membrane memory: {rss_before:.1} MiB before, {rss_attacked:.1} MiB under attack, peak {peak:.1} MiB"
    );
    println!(
        "failed calls: {} alone, {failed_attacked} under attack",
        failed_alone + failed_again
    );
    std::process::exit(0);
}
