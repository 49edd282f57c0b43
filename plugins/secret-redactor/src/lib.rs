//! `secret-redactor`: a membrane interceptor that finds credentials and personal data in what
//! servers send back (tool results, resource contents, prompts, errors) and replaces them
//! before the client, and the model behind it, ever sees them. The detection lives in
//! [`redactor`]; this file wires it to membrane through the SDK (`membrane-plugin`).
//!
//! Configuration (every field optional; unknown fields are refused):
//!
//! ```toml
//! methods = ["tools/call", "resources/read", "prompts/get"]  # answers scanned (the default)
//! detectors = ["aws-access-key", "email"]  # built-in detectors to use (default: all)
//! patterns = [{ name = "ticket", regex = "TCK-[0-9]{6}" }]  # extra detectors; a group named
//!                                          # `secret` limits the redaction to that group
//! replacement = "[REDACTED:{name}]"        # `{name}` becomes the detector's name
//! ```

pub mod redactor;

use membrane_plugin::host::{self, Level};
use membrane_plugin::{Action, Direction, Filter, Message, MessageKind, Plugin};

use crate::redactor::Redactor;

/// The redactor, as `init` configured it.
pub struct SecretRedactor(Redactor);

impl Plugin for SecretRedactor {
    fn init(config: &str) -> Result<(Self, Vec<Filter>), String> {
        let redactor = Redactor::from_json(config)?;
        let filter = Filter {
            methods: redactor.methods().to_vec(),
            directions: vec![Direction::ServerToClient],
            kinds: vec![
                MessageKind::Response,
                MessageKind::Error,
                MessageKind::Notification,
            ],
        };
        Ok((SecretRedactor(redactor), vec![filter]))
    }

    fn intercept(&self, message: &Message) -> Action {
        match self.0.redact_message(&message.json()) {
            Ok(None) => Action::Continue,
            Ok(Some(redacted)) => {
                let line = format!(
                    "redacted {} in the answer to {} (frame {})",
                    redacted.summary(),
                    message.method().as_deref().unwrap_or("?"),
                    message.frame_id()
                );
                host::log(Level::Info, &line);
                Action::Modify(redacted.json)
            }
            // Fail closed: an answer that cannot be scanned is not passed on.
            Err(e) => Action::Block(format!("secret-redactor cannot read the message: {e}")),
        }
    }
}

membrane_plugin::export!(SecretRedactor);
