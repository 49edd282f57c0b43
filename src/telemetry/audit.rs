//! [`Audit`]: the audit stream, one JSON object per line, appended to a file or written to
//! stderr. Each line has a `time`, an `event` (`verdict`, `settled`, `reload`) and what the
//! event is about: principal, session, method, tool, plugin, verdict and reason. Lines are
//! rare (a message that merely passes writes none), so each is written and flushed whole.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::interceptor::InterceptContext;

pub struct Audit {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Audit {
    /// Appends to `path`, or writes to stderr when it is `-`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stderr())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        Ok(Self {
            out: Mutex::new(out),
        })
    }

    /// Writes one line: `event`, stamped now, with `fields`.
    pub fn record(&self, event: &str, mut fields: Value) {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        if let Some(object) = fields.as_object_mut() {
            object.insert("time".into(), time.into());
            object.insert("event".into(), event.into());
        }
        let mut line = fields.to_string();
        line.push('\n');
        let mut out = self.out.lock();
        if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            tracing::error!("could not write the audit stream: {e}");
        }
    }

    /// A verdict other than continue on the message in `ctx`; `enforced` is false for an
    /// interceptor in audit mode.
    pub fn verdict(
        &self,
        ctx: &InterceptContext,
        plugin: Option<&str>,
        verdict: &str,
        reason: Option<&str>,
        enforced: bool,
    ) {
        let tool = ctx.tool_name();
        self.record(
            "verdict",
            json!({
                "enforced": enforced,
                "principal": ctx.principal.as_ref().map(|p| &p.subject),
                "session": ctx.session_id,
                "direction": ctx.direction,
                "method": ctx.method(),
                "tool": tool,
                "plugin": plugin,
                "verdict": verdict,
                "reason": reason,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Direction, Message};
    use crate::session::SessionId;
    use crate::transport::TransportType;

    #[test]
    fn writes_one_json_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&path).unwrap();
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm","arguments":{}}}"#;
        let ctx = InterceptContext::new(
            Message::new(call),
            Direction::ClientToServer,
            SessionId::from("s1"),
            TransportType::Stdio,
            1,
        );
        audit.verdict(&ctx, Some("tool-guard"), "block", Some("not allowed"), true);
        audit.record("reload", json!({ "ok": true }));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "verdict");
        assert_eq!(lines[0]["tool"], "rm");
        assert_eq!(lines[0]["plugin"], "tool-guard");
        assert_eq!(lines[0]["session"], "s1");
        assert_eq!(lines[0]["reason"], "not allowed");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["event"], "reload");
    }
}
