//! The native fast path: a message that no plugin wants is cut from the read buffer without a
//! copy, parsed once (envelope only), and the chain's decision allocates nothing, even with real Wasm plugins loaded. Counted with an
//! allocator that tallies this thread's allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use membrane::interceptor::{FailurePolicy, InterceptorChain};
use membrane::protocol::{Direction, Message, MessageKind};
use membrane::transport::{DEFAULT_MAX_MESSAGE_SIZE, Frame, NewlineCodec};
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

#[tokio::test(flavor = "current_thread")]
async fn a_message_no_plugin_wants_costs_no_allocation() {
    let engine = PluginEngine::new(EngineOptions::default()).unwrap();
    let config = serde_json::json!({"deny": ["delete_*"]});
    let guard = common::load_plugin(&engine, "tool-guard", config, PluginLimits::default())
        .await
        .unwrap();
    let chain = InterceptorChain::new().with(Arc::new(guard), FailurePolicy::Block);
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
