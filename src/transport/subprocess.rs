//! [`SubprocessOutgoing`]: the upstream side for stdio servers. Each connection spawns the server
//! command with piped stdin and stdout (newline-delimited JSON) and the child's stderr going to
//! membrane's stderr. The child belongs to its connection and runs in a process group of its
//! own, so wrappers such as `npx` are ended with whatever they started: closing the connection
//! closes the child's stdin, waits a grace period, then kills the group; dropping it kills the
//! child.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::process::{Child, Command};
use tokio_util::codec::FramedRead;

use super::connection::Writer;
use super::{
    Closed, Connection, ConnectionCloser, NewlineCodec, OutgoingTransport, TransportError,
    TransportType,
};

/// Spawns one server process per connection.
#[derive(Debug, Clone)]
pub struct SubprocessOutgoing {
    program: String,
    args: Vec<String>,
    max_message_size: usize,
}

impl SubprocessOutgoing {
    pub fn new(program: String, args: Vec<String>, max_message_size: usize) -> Self {
        Self {
            program,
            args,
            max_message_size,
        }
    }

    fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[async_trait]
impl OutgoingTransport for SubprocessOutgoing {
    fn transport_type(&self) -> TransportType {
        TransportType::Stdio
    }

    async fn connect(&self) -> Result<Connection, TransportError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|source| TransportError::Spawn {
                command: self.command_line(),
                source,
            })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        tracing::info!(pid = child.id(), command = %self.command_line(), "started upstream server");
        let (outbox, writer) = Writer::spawn(stdin);
        let inbound =
            FramedRead::with_capacity(stdout, NewlineCodec::new(self.max_message_size), 64 * 1024)
                .filter_map(|frame| async move {
                    frame
                        .map_err(|e| tracing::warn!(error = %e, "reading upstream stdout failed"))
                        .ok()
                });
        Ok(Connection {
            transport_type: TransportType::Stdio,
            inbound: Box::pin(inbound),
            outbox,
            closer: Box::new(ChildCloser { child, writer }),
            peer_session_id: Default::default(),
        })
    }
}

struct ChildCloser {
    child: Child,
    writer: Writer,
}

#[async_trait]
impl ConnectionCloser for ChildCloser {
    async fn close(self: Box<Self>, grace: Duration) -> Closed {
        let ChildCloser { mut child, writer } = *self;
        // Delivering what is queued and then dropping stdin is how MCP asks a server to exit.
        writer.finish(grace).await;
        let group = child.id();
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(pid = group, "upstream server did not exit; killing it");
                let _ = child.start_kill();
                child.wait().await
            }
        };
        if let Some(group) = group.and_then(|pid| i32::try_from(pid).ok()) {
            // Whatever the server left behind in its group goes with it.
            // SAFETY: kill(2) takes plain integers; a negative pid names the child's own group.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        match status {
            Ok(status) => Closed {
                exit_code: status.code(),
                description: format!("exited with {status}"),
            },
            Err(e) => Closed {
                exit_code: None,
                description: format!("could not be waited for: {e}"),
            },
        }
    }
}
