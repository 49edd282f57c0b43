//! Direct calls: a plugin that nothing can make wait is called on the caller's own stack,
//! without the fiber an async call needs (about half the cost of calling a plugin that reads
//! little). The direct linker gives plugins a `wasi:io` whose every blocking function
//! completes at once, as it does for membrane's sandbox (no files or sockets; standard
//! streams that are sinks), and stops the call with [`WouldWait`] when it would wait (a timer).
//! A direct call cannot yield, so its store stops it with [`Preempted`] once it has run past an
//! epoch tick. Either way the call is made again on a fiber, where waiting and long runs are
//! handled as before (yielding at every tick, within the time budget), and the plugin is
//! called on fibers from then on. A plugin that imports anything else that waits (`session-kv`,
//! files, sockets) cannot be instantiated for direct calls and is always called on a fiber.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamResult};
use wasmtime_wasi_io::bindings::wasi::io::poll::HostPollable;
use wasmtime_wasi_io::bindings::wasi::io::streams::{Host as _, HostInputStream, HostOutputStream};
use wasmtime_wasi_io::bindings::wasi::io::{poll, streams};

use super::host::PluginState;

/// The `wasi:io` release `wasmtime-wasi` links, whose names the direct linker redefines.
const IO_VERSION: &str = "0.2.12";

/// A direct call ran past an epoch tick.
#[derive(Debug, thiserror::Error)]
#[error("a direct call ran past an epoch tick")]
pub(super) struct Preempted;

/// A direct call would have waited in `wasi:io`.
#[derive(Debug, thiserror::Error)]
#[error("a direct call would have waited in wasi:io")]
pub(super) struct WouldWait;

/// Whether a direct call ended so that it must be made again on a fiber.
pub(super) fn needs_fiber(error: &wasmtime::Error) -> bool {
    error.is::<Preempted>() || error.is::<WouldWait>()
}

/// The output of `future` if it is ready at once; else [`WouldWait`].
fn at_once<F: Future>(future: F) -> wasmtime::Result<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => Err(WouldWait.into()),
    }
}

/// A stream operation's result as the contract's `result<T, stream-error>`.
fn lowered<T>(
    state: &mut PluginState,
    result: StreamResult<T>,
) -> wasmtime::Result<Result<T, streams::StreamError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(e) => Ok(Err(state.table().convert_stream_error(e)?)),
    }
}

/// Redefines every `wasi:io` function and destructor that may wait, on a linker that already
/// has `wasi:io`, with one that never does.
pub(super) fn link_io_that_never_waits(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut io = linker.instance(&format!("wasi:io/poll@{IO_VERSION}"))?;
    io.func_wrap(
        "poll",
        |mut store, (pollables,): (Vec<Resource<DynPollable>>,)| {
            Ok((at_once(poll::Host::poll(
                store.data_mut().table(),
                pollables,
            ))??,))
        },
    )?;
    io.func_wrap(
        "[method]pollable.block",
        |mut store, (this,): (Resource<DynPollable>,)| {
            at_once(store.data_mut().table().block(this))?
        },
    )?;
    io.func_wrap(
        "[method]pollable.ready",
        |mut store, (this,): (Resource<DynPollable>,)| {
            Ok((at_once(store.data_mut().table().ready(this))??,))
        },
    )?;

    let mut io = linker.instance(&format!("wasi:io/streams@{IO_VERSION}"))?;
    io.resource(
        "input-stream",
        ResourceType::host::<DynInputStream>(),
        |mut store, rep| {
            let stream = Resource::<DynInputStream>::new_own(rep);
            // A stream's clean-up that would wait is dropped with it.
            let _ = at_once(HostInputStream::drop(store.data_mut().table(), stream));
            Ok(())
        },
    )?;
    io.resource(
        "output-stream",
        ResourceType::host::<DynOutputStream>(),
        |mut store, rep| {
            let stream = Resource::<DynOutputStream>::new_own(rep);
            let _ = at_once(HostOutputStream::drop(store.data_mut().table(), stream));
            Ok(())
        },
    )?;
    io.func_wrap(
        "[method]input-stream.blocking-read",
        |mut store, (this, len): (Resource<DynInputStream>, u64)| {
            let state = store.data_mut();
            let read = at_once(state.table().blocking_read(this, len))?;
            Ok((lowered(state, read)?,))
        },
    )?;
    io.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut store, (this, len): (Resource<DynInputStream>, u64)| {
            let state = store.data_mut();
            let skipped = at_once(state.table().blocking_skip(this, len))?;
            Ok((lowered(state, skipped)?,))
        },
    )?;
    io.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store, (this, contents): (Resource<DynOutputStream>, Vec<u8>)| {
            let state = store.data_mut();
            let written = at_once(state.table().blocking_write_and_flush(this, contents))?;
            Ok((lowered(state, written)?,))
        },
    )?;
    io.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store, (this, len): (Resource<DynOutputStream>, u64)| {
            let state = store.data_mut();
            let written = at_once(state.table().blocking_write_zeroes_and_flush(this, len))?;
            Ok((lowered(state, written)?,))
        },
    )?;
    io.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store, (this,): (Resource<DynOutputStream>,)| {
            let state = store.data_mut();
            let flushed = at_once(state.table().blocking_flush(this))?;
            Ok((lowered(state, flushed)?,))
        },
    )?;
    io.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut store,
         (this, from, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            let state = store.data_mut();
            let spliced = at_once(state.table().blocking_splice(this, from, len))?;
            Ok((lowered(state, spliced)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
