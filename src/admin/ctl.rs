//! `membrane ctl`: the admin API from a terminal. Tables for people, `--json` for scripts;
//! every failure says what to do next. It is a plain client of `/v1`: whatever it can do, a
//! script with curl can too.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::transport::tls::{ClientTlsOptions, http_client};

#[derive(Debug, Args)]
pub struct Ctl {
    /// The admin API's address.
    #[arg(long, env = "MEMBRANE_ADMIN", default_value = "http://127.0.0.1:9464")]
    admin: String,
    /// A file holding the admin token (as in [admin] token_file).
    #[arg(long, env = "MEMBRANE_ADMIN_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Roots to trust for an https admin API, besides the system's.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// List sessions.
    Sessions {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Show one session.
    Session { id: String },
    /// End a session (and its upstream session or server process).
    Kill { id: String },
    /// List held messages.
    Held,
    /// Let a held message through.
    Approve {
        id: u64,
        /// The digest you saw (default: the current one, shown before it is approved).
        #[arg(long)]
        digest: Option<String>,
    },
    /// Answer a held message with an error.
    Deny {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        digest: Option<String>,
    },
    /// Replace a held message, then let the replacement through.
    Modify {
        id: u64,
        /// The replacement JSON-RPC message (same kind and id as the held one).
        #[arg(long)]
        message: String,
        #[arg(long)]
        digest: Option<String>,
    },
    /// List the plugins of the chain with their metrics.
    Plugins,
    /// Reload the configuration and plugins (as SIGHUP does).
    Reload,
    /// Follow live events until interrupted.
    Watch,
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.trim_end_matches('/'))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the admin API at {}: is membrane running with [admin] listen there? (set --admin or MEMBRANE_ADMIN)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let error = value["error"].as_str().unwrap_or(&text);
            match status.as_u16() {
                401 => {
                    bail!("{error} (give the token with --token-file or MEMBRANE_ADMIN_TOKEN_FILE)")
                }
                _ => bail!("{status}: {error}"),
            }
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// The digest the operator gave, else that of held message `id` now.
    async fn digest(&self, id: u64, given: Option<String>) -> anyhow::Result<String> {
        if let Some(digest) = given {
            return Ok(digest);
        }
        let held = self.get("/v1/held").await?;
        let message = held
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["id"] == id)
            .with_context(|| format!("no message {id} is held now; see `membrane ctl held`"))?;
        eprintln!(
            "held message {id}: {} {}",
            message["method"].as_str().unwrap_or("-"),
            message["tool"].as_str().unwrap_or("")
        );
        Ok(message["digest"].as_str().unwrap_or_default().to_owned())
    }
}

impl Ctl {
    /// Runs the command; the exit code.
    pub async fn run(self) -> anyhow::Result<i32> {
        let token_file = self.token_file.clone().context(
            "the admin API needs its token: pass --token-file FILE (or set MEMBRANE_ADMIN_TOKEN_FILE)",
        )?;
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("cannot read the token file {}", token_file.display()))?
            .trim()
            .to_owned();
        let options = ClientTlsOptions {
            ca_file: self.ca_file.clone(),
            client_cert: None,
        };
        let http = http_client(&options)?
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let client = Client {
            http,
            base: self.admin.clone(),
            token,
        };
        let json = self.json;
        let print = |value: &Value, table: fn(&Value) -> String| match json {
            true => println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            ),
            false => print!("{}", table(value)),
        };
        match self.command {
            CtlCommand::Sessions { principal } => {
                let mut path = "/v1/sessions?limit=1000".to_owned();
                if let Some(p) = principal {
                    path.push_str(&format!("&principal={}", urlencode(&p)));
                }
                print(&client.get(&path).await?, sessions_table);
            }
            CtlCommand::Session { id } => {
                let session = client
                    .get(&format!("/v1/sessions/{}", urlencode(&id)))
                    .await?;
                print(&session, |s| {
                    format!("{}\n", serde_json::to_string_pretty(s).unwrap_or_default())
                });
            }
            CtlCommand::Kill { id } => {
                client
                    .call(
                        reqwest::Method::DELETE,
                        &format!("/v1/sessions/{}", urlencode(&id)),
                        None,
                    )
                    .await?;
                print(&json!({ "ended": id }), |v| {
                    format!("ended session {}\n", v["ended"].as_str().unwrap_or(""))
                });
            }
            CtlCommand::Held => print(&client.get("/v1/held").await?, held_table),
            CtlCommand::Approve { id, digest } => {
                let digest = client.digest(id, digest).await?;
                let answer = client
                    .post(
                        &format!("/v1/held/{id}/approve"),
                        json!({ "digest": digest }),
                    )
                    .await?;
                print(&answer, settled_line);
            }
            CtlCommand::Deny { id, reason, digest } => {
                let digest = client.digest(id, digest).await?;
                let answer = client
                    .post(
                        &format!("/v1/held/{id}/deny"),
                        json!({ "digest": digest, "reason": reason }),
                    )
                    .await?;
                print(&answer, settled_line);
            }
            CtlCommand::Modify {
                id,
                message,
                digest,
            } => {
                let message: Value = serde_json::from_str(&message)
                    .context("--message must be a JSON-RPC message in JSON")?;
                let digest = client.digest(id, digest).await?;
                let answer = client
                    .post(
                        &format!("/v1/held/{id}/modify"),
                        json!({ "digest": digest, "message": message }),
                    )
                    .await?;
                print(&answer, settled_line);
            }
            CtlCommand::Plugins => print(&client.get("/v1/plugins").await?, plugins_table),
            CtlCommand::Reload => {
                let report = client.post("/v1/reload", json!({})).await?;
                print(&report, |r| {
                    let names = |key: &str| {
                        let list: Vec<&str> = r[key]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        if list.is_empty() {
                            "-".to_owned()
                        } else {
                            list.join(", ")
                        }
                    };
                    format!(
                        "reloaded: loaded {}; kept {}; removed {}\n",
                        names("loaded"),
                        names("kept"),
                        names("removed")
                    )
                });
            }
            CtlCommand::Watch => client.watch(json).await?,
        }
        Ok(0)
    }
}

impl Client {
    /// Prints each live event as it comes.
    async fn watch(&self, json: bool) -> anyhow::Result<()> {
        let response = self
            .http
            .get(self.url("/v1/events"))
            .bearer_auth(&self.token)
            .send()
            .await
            .context("cannot reach the admin API")?;
        if !response.status().is_success() {
            bail!(
                "{}: give the right token with --token-file",
                response.status()
            );
        }
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        let mut kind = String::new();
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                let line = line.trim_end();
                if let Some(event) = line.strip_prefix("event:") {
                    kind = event.trim().to_owned();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let data = data.trim();
                    match json {
                        true => println!("{{\"event\":{:?},\"data\":{data}}}", kind),
                        false => println!("{kind:<15} {data}"),
                    }
                }
            }
        }
        Ok(())
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn sessions_table(value: &Value) -> String {
    let rows = value["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                text(&s["id"]),
                text(&s["principal"]),
                format!(
                    "{}→{}",
                    text(&s["client_transport"]),
                    text(&s["upstream_transport"])
                ),
                text(&s["client_info"]["name"]),
                text(&s["protocol_version"]),
                text(&s["messages"]["client_to_server"]),
                text(&s["pending_requests"]),
                text(&s["created_at"]),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "PRINCIPAL",
            "TRANSPORTS",
            "CLIENT",
            "VERSION",
            "REQUESTS",
            "PENDING",
            "CREATED",
        ],
        rows,
    )
}

fn held_table(value: &Value) -> String {
    let rows: Vec<Vec<String>> = value
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            vec![
                text(&h["id"]),
                text(&h["session"]).chars().take(8).collect(),
                text(&h["method"]),
                text(&h["tool"]),
                h["arguments"].to_string(),
                text(&h["plugin"]),
                text(&h["deadline"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no message is held\n".into();
    }
    table(
        &[
            "ID",
            "SESSION",
            "METHOD",
            "TOOL",
            "ARGUMENTS",
            "PLUGIN",
            "DEADLINE",
        ],
        rows,
    )
}

fn plugins_table(value: &Value) -> String {
    let rows = value
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let m = &p["metrics"];
            let failures: u64 = ["traps", "timeouts", "bad_actions", "unavailable"]
                .iter()
                .map(|k| m[*k].as_u64().unwrap_or(0))
                .sum();
            let micros = |v: &Value| v.as_f64().map_or("-".into(), |us| format!("{us:.0}µs"));
            let name = match p["mode"].as_str() {
                Some("audit") => format!("{} (audit)", text(&p["name"])),
                _ => text(&p["name"]),
            };
            vec![
                name,
                text(&p["contract"]),
                text(&p["on_error"]),
                text(&m["calls"]),
                text(&m["blocked"]),
                text(&m["paused"]),
                failures.to_string(),
                micros(&m["p50_us"]),
                micros(&m["p99_us"]),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "CONTRACT", "ON ERROR", "CALLS", "BLOCKED", "PAUSED", "FAILURES", "P50", "P99",
        ],
        rows,
    )
}

fn settled_line(value: &Value) -> String {
    format!(
        "held message {} {}\n",
        text(&value["id"]),
        text(&value["settled"])
    )
}
