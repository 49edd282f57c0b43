//! The native fast path: a message that no plugin wants is cut from the read buffer without a
//! copy, parsed once (envelope only), and the chain's decision allocates nothing, even with
//! real Wasm plugins loaded; nor does the whole pipeline, session bookkeeping included, for a
//! notification or an answer nobody wants. Counted with an allocator that tallies this thread's
//! allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use membrane::interceptor::{FailurePolicy, InterceptorChain, PauseController, PauseTimeoutPolicy};
use membrane::protocol::{Direction, Message, MessageKind};
use membrane::proxy::{Lane, Pipeline, SessionContext};
use membrane::session::{SessionConfig, SessionManager};
use membrane::transport::{DEFAULT_MAX_MESSAGE_SIZE, Frame, NewlineCodec, Outbox, TransportType};
use membrane::wasm::{EngineOptions, PluginEngine, PluginLimits};
use tokio_util::codec::Decoder;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// A chain with the real tool-guard plugin, which wants `tools/call` requests only.
async fn guard_chain() -> InterceptorChain {
    let engine = PluginEngine::new(EngineOptions::default()).unwrap();
    let config = serde_json::json!({"deny": ["delete_*"]});
    let guard = common::load_plugin(&engine, "tool-guard", config, PluginLimits::default())
        .await
        .unwrap();
    InterceptorChain::new().with(Arc::new(guard), FailurePolicy::Block)
}

#[tokio::test(flavor = "current_thread")]
async fn a_message_no_plugin_wants_costs_no_allocation() {
    let chain = guard_chain().await;
    let line = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progressToken\":\"t\",\"progress\":1,\"message\":\"{}\"}}}}\n",
        "p".repeat(1000)
    );
    // Two lines arrive in one read, as from a pipe; the codec cuts messages out of the buffer.
    let mut buffer = BytesMut::from(format!("{line}{line}").as_bytes());
    let mut codec = NewlineCodec::new(DEFAULT_MAX_MESSAGE_SIZE);
    codec.decode(&mut buffer).unwrap();
    let wanted_raw = Bytes::from_static(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#,
    );

    let before = allocations();
    let Some(Frame::Message(message)) = codec.decode(&mut buffer).unwrap() else {
        panic!("a message")
    };
    let kind = message.validate().unwrap();
    let wanted = chain.wants(Direction::ClientToServer, kind, message.method());
    let after = allocations();

    assert_eq!(kind, MessageKind::Notification);
    assert!(!wanted);
    assert_eq!(after - before, 0, "the fast path allocated");
    assert_eq!(message.raw().as_ref(), line.trim_end().as_bytes());

    let wanted = Message::new(wanted_raw);
    let kind = wanted.validate().unwrap();
    assert!(
        chain.wants(Direction::ClientToServer, kind, wanted.method()),
        "the guard wants tools/call"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_whole_pipeline_passes_what_nobody_wants_without_allocating() {
    let chain = guard_chain().await;
    let pipeline = Arc::new(Pipeline::new(
        Arc::new(SessionManager::with_config(SessionConfig::default())),
        Arc::new(ArcSwap::from_pointee(chain)),
        Arc::new(PauseController::new(PauseTimeoutPolicy::Block)),
        DEFAULT_MAX_MESSAGE_SIZE,
    ));
    let session = pipeline
        .sessions
        .create(TransportType::Stdio, TransportType::Stdio, None)
        .await
        .unwrap();
    let live = pipeline.sessions.live(&session.id).unwrap();
    let context = Arc::new(SessionContext::new(&session, live, Default::default()));
    let (to_server, server) = Outbox::channel();
    let (to_client, client) = Outbox::channel();
    let upward = Lane {
        direction: Direction::ClientToServer,
        forward: to_server.clone(),
        reply: to_client.clone(),
    };
    let downward = Lane {
        direction: Direction::ServerToClient,
        forward: to_client,
        reply: to_server,
    };
    let note = Message::new(format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"t","progress":1,"message":"{}"}}}}"#,
        "p".repeat(1000)
    ));
    let request =
        |id: u32| Message::new(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
    let answer = |id: u32| Message::new(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#));
    // Warm up: the queues' room, the pending map's table.
    for id in 0..4 {
        pipeline
            .process(&context, &upward, Frame::Message(note.clone()))
            .await;
        pipeline
            .process(&context, &upward, Frame::Message(request(id)))
            .await;
        pipeline
            .process(&context, &downward, Frame::Message(answer(id)))
            .await;
    }
    pipeline
        .process(&context, &upward, Frame::Message(request(9)))
        .await;
    let (note, reply) = (note.clone(), answer(9));
    // Take what the warm-up queued; the queues keep their room.
    let taken =
        |queue: &flume::Receiver<Message>| std::iter::from_fn(|| queue.try_recv().ok()).count();
    let (warm_server, warm_client) = (taken(&server), taken(&client));

    let before = allocations();
    pipeline
        .process(&context, &upward, Frame::Message(note))
        .await;
    pipeline
        .process(&context, &downward, Frame::Message(reply))
        .await;
    let after = allocations();

    assert_eq!(after - before, 0, "the pipeline allocated");
    assert_eq!(
        warm_server + taken(&server),
        10,
        "every message to the server went on"
    );
    assert_eq!(
        warm_client + taken(&client),
        5,
        "every answer reached the client"
    );
}
