//! [`SubprocessOutgoing`]: the upstream side for stdio servers. Each connection spawns the server
//! command with piped stdin and stdout (newline-delimited JSON) and the child's stderr going to
//! membrane's stderr. The child belongs to its connection and runs in a process group of its
//! own, so wrappers such as `npx` are ended with whatever they started: closing the connection
//! closes the child's stdin, waits a grace period, then kills the group; dropping it kills the
//! child. The group is only ever signalled while its leader is not yet reaped, so its id cannot
//! have been reused by an unrelated process. Should membrane die without closing, the kernel
//! kills the child (a parent-death signal; it follows the thread that spawned the child, which
//! is a runtime worker living as long as membrane does).

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::process::{Child, Command};
use tokio_util::codec::FramedRead;

use super::connection::Writer;
use super::{
    Closed, Connection, ConnectionCloser, Inbound, Listening, NewlineCodec, OutgoingTransport,
    TransportError, TransportType,
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

    async fn connect(&self, _: &Listening) -> Result<Connection, TransportError> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .process_group(0);
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls (prctl, getppid) run between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // membrane died before the signal was armed: do not outlive it.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("membrane exited"));
                }
                Ok(())
            })
        };
        let mut child = command.spawn().map_err(|source| TransportError::Spawn {
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
        Ok(Connection::new(
            TransportType::Stdio,
            Inbound::stream(inbound),
            outbox,
            Box::new(ChildCloser { child, writer }),
        ))
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
        if let Some(pid) = child.id() {
            // Until the leader is reaped its pid (the group's id) cannot be reused, so the
            // group is signalled before `wait` reaps it: whatever the server left behind goes
            // with it, and a server that did not exit in time is killed.
            if !exited_unreaped(pid, grace).await {
                tracing::warn!(pid, "upstream server did not exit; killing it");
            }
            // SAFETY: kill(2) takes plain integers; a negative pid names the child's own group.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
        let status = child.wait().await;
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

/// Waits up to `grace` for process `pid` (a child of ours) to exit, without reaping it; true
/// once it has. Uses a pidfd where the kernel has them, else polls `waitid(WNOWAIT)`.
async fn exited_unreaped(pid: u32, grace: Duration) -> bool {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd >= 0 {
        // SAFETY: the descriptor was just opened and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the descriptor for as long as it lives.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        if let Ok(fd) = registered {
            // A pidfd becomes readable when its process exits.
            return tokio::time::timeout(grace, fd.readable()).await.is_ok();
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        if let Some(exited) = exited_now(pid) {
            return exited;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether child `pid` has exited (left unreaped): `None` while it runs.
fn exited_now(pid: u32) -> Option<bool> {
    // SAFETY: waitid writes into the zeroed siginfo it is given.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    let found = unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) };
    match found {
        // SAFETY: si_pid is set (non-zero) only when a child changed state.
        0 if unsafe { info.si_pid() } != 0 => Some(true),
        0 => None,
        // No such child any more: nothing left to wait for.
        _ => Some(true),
    }
}
