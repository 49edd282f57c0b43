//! `secret-redactor`: a membrane interceptor that finds credentials and personal data in what
//! servers send back (tool results, resource contents, prompts, errors) and replaces them
//! before the client, and the model behind it, ever sees them. The detection lives in
//! [`redactor`]; this file only wires it to the `interceptor` world, and only on wasm32, so
//! that its tests run natively.
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

#[cfg(target_arch = "wasm32")]
mod plugin {
    use std::sync::OnceLock;

    use crate::redactor::Redactor;

    wit_bindgen::generate!({ path: "../../wit", world: "interceptor" });

    use membrane::interceptor::host::{Level, log};
    use membrane::interceptor::types::{Direction, MessageKind};

    /// This instance's redactor, set once by `init`.
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();

    struct SecretRedactor;

    impl Guest for SecretRedactor {
        fn init(config: String) -> Result<Vec<Filter>, String> {
            let redactor = Redactor::from_json(&config)?;
            let filter = Filter {
                methods: redactor.methods().to_vec(),
                directions: vec![Direction::ServerToClient],
                kinds: vec![
                    MessageKind::Response,
                    MessageKind::Error,
                    MessageKind::Notification,
                ],
            };
            REDACTOR
                .set(redactor)
                .map_err(|_| "secret-redactor: init called twice".to_owned())?;
            Ok(vec![filter])
        }

        fn intercept(message: Message) -> Action {
            // Fail closed: an answer that cannot be scanned is not passed on.
            let Some(redactor) = REDACTOR.get() else {
                return Action::Block("secret-redactor is not initialised".to_owned());
            };
            match redactor.redact_message(&message.json) {
                Ok(None) => Action::Continue,
                Ok(Some(redacted)) => {
                    log(
                        Level::Info,
                        &format!(
                            "redacted {} in the answer to {} (frame {})",
                            redacted.summary(),
                            message.method.as_deref().unwrap_or("?"),
                            message.frame_id
                        ),
                    );
                    Action::Modify(redacted.json)
                }
                Err(e) => Action::Block(format!("secret-redactor cannot read the message: {e}")),
            }
        }
    }

    export!(SecretRedactor);
}
