//! Testing a policy change before rollout: every recorded message is run through a chain (a
//! new configuration's, in process, no upstream needed) as it was recorded, in order, each
//! tape in a session of its own (so session state such as a rate-limit budget builds up as
//! it did). The verdict each message gets now is set beside the one it got then, and every
//! difference is reported with totals. A held or delayed message is reported as such, not
//! waited for; an interceptor that fails on a message is reported with it.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use super::tape::{Tape, decisive};
use crate::interceptor::{ChainRecord, InterceptContext, InterceptorChain, LinkVerdict};
use crate::protocol::{Direction, Message, MessageKind, id_key};
use crate::session::{SessionId, SessionManager};

/// A message whose verdict differs, or whose interceptor failed.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub tape: PathBuf,
    /// The message's position among its tape's entries, from 1.
    pub entry: usize,
    pub direction: Direction,
    pub method: Option<String>,
    /// The tool of a `tools/call` (or its answer).
    pub tool: Option<String>,
    pub recorded: String,
    pub now: String,
    /// The interceptors' verdicts now.
    pub verdicts: Vec<LinkVerdict>,
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub sessions: usize,
    pub messages: usize,
    /// Messages a chain stopped before the recorder's place: not on the tape, not tested.
    pub withheld: usize,
    pub changed: usize,
    pub now_blocked: usize,
    pub now_allowed: usize,
    pub now_modified: usize,
    /// Messages on which an interceptor failed (trapped, timed out, answered nonsense).
    pub errors: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct PolicyReport {
    pub changes: Vec<Change>,
    pub totals: Totals,
}

impl PolicyReport {
    /// Whether any verdict changed or any interceptor failed.
    pub fn failed(&self) -> bool {
        self.totals.changed > 0 || self.totals.errors > 0
    }
}

/// Verdicts that let a message go on.
fn lets_through(verdict: &str) -> bool {
    matches!(verdict, "continue" | "modify")
}

/// Runs every message of `tapes` through `chain`, each tape in a new session of `sessions`.
pub async fn run(
    chain: &InterceptorChain,
    sessions: &SessionManager,
    tapes: &[(PathBuf, Tape)],
) -> PolicyReport {
    let mut report = PolicyReport::default();
    for (path, tape) in tapes {
        report.totals.sessions += 1;
        let session = sessions
            .create(
                tape.header.client_transport,
                tape.header.upstream_transport,
                None,
            )
            .await
            .map(|s| s.id)
            .unwrap_or_else(|_| SessionId::from("test-policy"));
        let version = tape.header.protocol_version.as_deref().map(Into::into);
        // Requests awaiting answers, as the proxy keeps them: answers carry their request.
        let mut pending: HashMap<(Direction, String), Message> = HashMap::new();
        for (index, entry) in tape.entries.iter().enumerate() {
            report.totals.messages += 1;
            let Some(message) = &entry.message else {
                report.totals.withheld += 1;
                continue;
            };
            let kind = message.kind();
            let request = match (kind, message.id()) {
                (Some(MessageKind::Request), Some(id)) => {
                    let key = (entry.direction, id_key(id).into_owned());
                    pending.insert(key, message.clone());
                    None
                }
                (Some(MessageKind::Response | MessageKind::Error), Some(id)) => {
                    pending.remove(&(entry.direction.reverse(), id_key(id).into_owned()))
                }
                _ => None,
            };
            let mut ctx = InterceptContext::new(
                message.clone(),
                entry.direction,
                session.clone(),
                match entry.direction {
                    Direction::ClientToServer => tape.header.client_transport,
                    Direction::ServerToClient => tape.header.upstream_transport,
                },
                index as u64 + 1,
            );
            ctx.protocol_version = version.clone();
            ctx.request_method = request
                .as_ref()
                .map(|request| request.method().unwrap_or_default().to_owned());
            ctx.request = request;
            ctx.record = Some(Box::<ChainRecord>::default());
            let wanted = kind.is_some_and(|kind| chain.wants(entry.direction, kind, ctx.method()));
            let verdicts = if wanted {
                chain.run(&mut ctx, 0).await;
                ctx.record.take().map(|r| r.verdicts).unwrap_or_default()
            } else {
                Vec::new()
            };
            let (then, now) = (entry.verdict(), decisive(&verdicts));
            let failed = verdicts.iter().any(|v| v.error.is_some());
            let modified_otherwise = then == "modify"
                && now == "modify"
                && entry.delivered.as_ref().map(|m| m.raw()) != Some(ctx.message.raw());
            if then == now && !failed && !modified_otherwise {
                continue;
            }
            let totals = &mut report.totals;
            totals.errors += usize::from(failed);
            if then != now || modified_otherwise {
                totals.changed += 1;
                totals.now_blocked += usize::from(now == "block" && then != "block");
                totals.now_allowed += usize::from(lets_through(now) && !lets_through(then));
                totals.now_modified += usize::from(now == "modify" && then != "modify");
            }
            report.changes.push(Change {
                tape: path.clone(),
                entry: index + 1,
                direction: entry.direction,
                method: ctx.method().map(str::to_owned),
                tool: ctx.tool_name(),
                recorded: then.to_owned(),
                now: if modified_otherwise {
                    "modify (otherwise)".into()
                } else {
                    now.to_owned()
                },
                verdicts,
            });
        }
        sessions.close(&session);
    }
    report
}

impl std::fmt::Display for PolicyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut tape = None;
        for change in &self.changes {
            if tape != Some(&change.tape) {
                tape = Some(&change.tape);
                writeln!(f, "{}", change.tape.display())?;
            }
            let what = match (&change.method, &change.tool) {
                (Some(method), Some(tool)) => format!("{method} {tool}"),
                (Some(method), None) => method.clone(),
                _ => "-".into(),
            };
            let arrow = match change.direction {
                Direction::ClientToServer => "client → server",
                Direction::ServerToClient => "server → client",
            };
            write!(
                f,
                "  #{:<5} {arrow}  {what}: {} → {}",
                change.entry, change.recorded, change.now
            )?;
            let deciding = change
                .verdicts
                .iter()
                .find(|v| v.error.is_some() || v.verdict == change.now.as_str());
            if let Some(v) = deciding {
                write!(f, " (by {}", v.by)?;
                if let Some(reason) = &v.reason {
                    write!(f, ": {reason}")?;
                }
                if let Some(error) = &v.error {
                    write!(f, "; failed: {error}")?;
                }
                write!(f, ")")?;
            }
            writeln!(f)?;
        }
        let t = &self.totals;
        let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
        writeln!(
            f,
            "{} in {} ({} withheld): {} changed ({} now blocked, {} now allowed, {} now modified), {} with errors",
            plural(t.messages, "message"),
            plural(t.sessions, "session"),
            t.withheld,
            t.changed,
            t.now_blocked,
            t.now_allowed,
            t.now_modified,
            t.errors
        )
    }
}
