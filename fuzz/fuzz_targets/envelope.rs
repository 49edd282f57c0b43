//! The message envelope and its validation: any bytes are a valid message or a clear error,
//! the lazily parsed envelope agrees with a full parse, ids meet under one key however they
//! are written, and answers built for a message are themselves valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use membrane::protocol::{ErrorCode, Message, MessageKind, error_response, id_key};
use membrane::transport::streamable_http::{mirrored_headers, named_target};

fuzz_target!(|data: &[u8]| {
    let message = Message::new(data.to_vec());
    let kind = match message.validate() {
        Ok(kind) => kind,
        Err(e) => {
            assert!(message.kind().is_none() && message.as_str().is_empty());
            let _ = e.code();
            return;
        }
    };
    // Numbers beyond what an f64 holds are valid JSON that a `Value` cannot hold: those
    // messages are checked no further.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match kind {
        MessageKind::Batch => {
            let elements = value.as_array().expect("a batch is an array");
            assert_eq!(message.batch_len(), elements.len());
            let split = message.batch_elements().expect("a valid batch splits");
            assert_eq!(split.len(), elements.len());
            for element in split {
                let _ = element.validate();
            }
        }
        _ => {
            assert_eq!(message.method(), value["method"].as_str());
            if let Some(id) = message.id() {
                let parsed: serde_json::Value = serde_json::from_str(id).expect("an id is JSON");
                assert_eq!(
                    id_key(id),
                    id_key(&parsed.to_string()),
                    "one key however written"
                );
            }
            let _ = named_target(&message);
            let _ = mirrored_headers(&message);
            if kind == MessageKind::Request {
                let error = error_response(message.id(), ErrorCode::InvalidRequest, "x");
                assert_eq!(error.validate(), Ok(MessageKind::Error));
                assert_eq!(error.id(), message.id());
            }
        }
    }
});
