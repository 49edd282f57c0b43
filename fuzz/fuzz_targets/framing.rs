//! Newline framing on stdio: any bytes, split anywhere, give frames within the size limit or
//! an `Oversized` report, and the read buffer never holds much more than the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use membrane::transport::{Frame, NewlineCodec};
use tokio_util::codec::Decoder;

const MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 32) + 1;
    let mut codec = NewlineCodec::new(MAX);
    let mut buffer = BytesMut::new();
    let check = |frame: Frame| match frame {
        Frame::Message(message) => {
            assert!(message.raw().len() <= MAX);
            assert!(!message.raw().contains(&b'\n'));
            let _ = message.validate();
        }
        Frame::Oversized { len, .. } => assert!(len > MAX),
    };
    for piece in data.chunks(chunk) {
        buffer.extend_from_slice(piece);
        while let Some(frame) = codec.decode(&mut buffer).expect("decoding never fails") {
            check(frame);
        }
        assert!(buffer.len() <= MAX + chunk, "the buffer stays bounded");
    }
    while let Some(frame) = codec.decode_eof(&mut buffer).expect("decoding never fails") {
        check(frame);
    }
});
