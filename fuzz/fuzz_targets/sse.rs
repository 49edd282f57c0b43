//! The SSE parser used on upstreams: any bytes, split anywhere, give events whose data stays
//! within the bound or an `Oversized` report; feeding the same bytes whole or in pieces gives
//! the same items.
#![no_main]

use libfuzzer_sys::fuzz_target;
use membrane::transport::streamable_http::{SseItem, SseParser};

const MAX: usize = 128;

fn parse(data: &[u8], chunk: usize) -> Vec<SseItem> {
    let mut parser = SseParser::new(MAX);
    let mut items = Vec::new();
    for piece in data.chunks(chunk) {
        parser.feed(piece, &mut |item| items.push(item));
    }
    items
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let pieces = parse(data, usize::from(split % 16) + 1);
    for item in &pieces {
        match item {
            SseItem::Event(event) => assert!(event.data.len() <= MAX),
            SseItem::Oversized { len, .. } => assert!(*len > 0),
        }
    }
    let whole = parse(data, data.len().max(1));
    // An oversized event's reported length may differ with the split (it is counted as the
    // bytes stream past); everything else must be identical.
    let shape = |items: &[SseItem]| {
        items
            .iter()
            .map(|item| match item {
                SseItem::Event(event) => Some(event.clone()),
                SseItem::Oversized { .. } => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&pieces), shape(&whole));
});
