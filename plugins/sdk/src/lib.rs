//! `membrane-plugin`: the Rust SDK for membrane interceptor plugins. A plugin is a type that
//! implements [`Plugin`] (an `init` that reads the operator's configuration and says which
//! messages the plugin wants, and an `intercept` that decides on each), exported with
//! [`export!`]. The SDK carries the glue to the WIT contract (`membrane:interceptor`), so a
//! plugin's code is its policy only. A [`Message`] is read on demand (contract 0.2): asking
//! for a tool's name ([`Message::tool_name`]) or one value ([`Message::get`]) copies only that
//! into the plugin. Typed helpers read a message ([`Message::tool_call`],
//! [`Message::pointer`]) and build actions ([`Action::block`], [`Action::modify`], or
//! [`Action::edit`] and [`Action::patch`], which change a message without rebuilding it); the
//! host's services are in [`host`]. Built for anything but wasm32, the same code runs natively, with
//! [`testing`] to build messages and an in-memory session store, so a plugin's decisions are
//! unit-tested with `cargo test`.
//!
//! ```ignore
//! use membrane_plugin::{Action, Filter, Message, Plugin};
//!
//! struct NoRmRf;
//!
//! impl Plugin for NoRmRf {
//!     fn init(_config: &str) -> Result<(Self, Vec<Filter>), String> {
//!         Ok((NoRmRf, vec![Filter::requests(["tools/call"])]))
//!     }
//!
//!     fn intercept(&self, message: &Message) -> Action {
//!         match message.tool_call() {
//!             Some(call) if call.mentions("rm -rf") => Action::block("rm -rf is not allowed"),
//!             _ => Action::Continue,
//!         }
//!     }
//! }
//!
//! membrane_plugin::export!(NoRmRf);
//! ```

pub mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

mod message;

pub use message::{Message, ToolCall};
pub use serde_json;

/// The bindings generated from the contract; [`export!`] wires a [`Plugin`] to them.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "stateful-interceptor",
        default_bindings_module: "membrane_plugin::bindings",
        pub_export_macro: true,
        export_macro_name: "export_interceptor",
    });
}

/// Which way a message travels through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// The JSON-RPC shape of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Notification,
    Response,
    Error,
}

/// How a side of the proxy is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Stdio,
    StreamableHttp,
}

/// One kind of message a plugin wants; within a filter, each empty list means "any". The host
/// matches filters natively: a message no filter matches never reaches the plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Method globs (`*`, `?`); an answer matches by the method of the request it answers.
    pub methods: Vec<String>,
    pub directions: Vec<Direction>,
    pub kinds: Vec<MessageKind>,
}

impl Filter {
    /// Client requests with these methods (globs).
    pub fn requests<S: Into<String>>(methods: impl IntoIterator<Item = S>) -> Self {
        Filter {
            methods: methods.into_iter().map(Into::into).collect(),
            directions: vec![Direction::ClientToServer],
            kinds: vec![MessageKind::Request],
        }
    }

    /// The server's answers (results and errors) to requests with these methods (globs).
    pub fn answers<S: Into<String>>(methods: impl IntoIterator<Item = S>) -> Self {
        Filter {
            methods: methods.into_iter().map(Into::into).collect(),
            directions: vec![Direction::ServerToClient],
            kinds: vec![MessageKind::Response, MessageKind::Error],
        }
    }
}

/// One change at a JSON pointer: a value set (JSON text) or removed. Setting an object's
/// member adds or replaces it; setting an array's index replaces that element, `-` appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub pointer: String,
    pub value: Option<String>,
}

impl Edit {
    /// Sets `value` at `pointer`.
    pub fn set(pointer: impl Into<String>, value: &serde_json::Value) -> Self {
        Edit {
            pointer: pointer.into(),
            value: Some(value.to_string()),
        }
    }

    /// Removes the value at `pointer` (none there is not an error).
    pub fn remove(pointer: impl Into<String>) -> Self {
        Edit {
            pointer: pointer.into(),
            value: None,
        }
    }
}

/// A final decision, as used after a delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Replace the message with this JSON-RPC message (JSON text).
    Modify(String),
    /// Change the message by these edits, in order.
    Edit(Vec<Edit>),
    /// Change the message by this JSON Patch (RFC 6902, JSON text).
    Patch(String),
    /// Do not deliver: a request is answered with a JSON-RPC error carrying this reason, an
    /// answer is replaced by one, a notification is dropped.
    Block(String),
    /// Answer a request with this `result` (JSON text) instead of delivering it.
    Mock(String),
}

/// What a plugin decides for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Continue,
    Modify(String),
    Edit(Vec<Edit>),
    Patch(String),
    Block(String),
    Mock(String),
    /// Hold the message for an operator, at most this many milliseconds.
    Pause(u64),
    /// Hold the message this many milliseconds, then apply the verdict.
    Delay {
        millis: u64,
        then: Verdict,
    },
}

impl Action {
    /// Blocks the message with `reason`.
    pub fn block(reason: impl Into<String>) -> Self {
        Action::Block(reason.into())
    }

    /// Replaces the message with `message` (a whole JSON-RPC message).
    pub fn modify(message: &serde_json::Value) -> Self {
        Action::Modify(message.to_string())
    }

    /// Changes the message by `edits`, in order: membrane makes them, the plugin never holds
    /// the whole message.
    pub fn edit(edits: impl IntoIterator<Item = Edit>) -> Self {
        Action::Edit(edits.into_iter().collect())
    }

    /// Changes the message by a JSON Patch (RFC 6902): an array of operations.
    pub fn patch(operations: &serde_json::Value) -> Self {
        Action::Patch(operations.to_string())
    }

    /// Answers a request with `result` instead of delivering it.
    pub fn mock(result: &serde_json::Value) -> Self {
        Action::Mock(result.to_string())
    }
}

/// A plugin: built once per instance from the operator's configuration, then asked about each
/// message it wants. The host may run several instances at once, each with its own value: keep
/// what all of them must share in the session's store ([`host::session_kv`]).
pub trait Plugin: Sized + Send + Sync + 'static {
    /// Reads the configuration (the JSON text of the plugin's `config` table, `{}` when none)
    /// and says what the plugin wants to see; an error refuses the plugin at load time.
    fn init(config: &str) -> Result<(Self, Vec<Filter>), String>;

    /// Decides on one message.
    fn intercept(&self, message: &Message) -> Action;
}

/// Exports a [`Plugin`] as the component's `interceptor`: `membrane_plugin::export!(MyPlugin);`.
/// Only on wasm32; elsewhere (unit tests) it expands to nothing.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static PLUGIN: ::std::sync::OnceLock<$plugin> = ::std::sync::OnceLock::new();

            struct Glue;

            impl $crate::bindings::Guest for Glue {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<$crate::bindings::Filter>,
                    ::std::string::String,
                > {
                    $crate::glue::init::<$plugin>(&PLUGIN, &config)
                }

                fn intercept(message: &$crate::bindings::Message) -> $crate::bindings::Action {
                    $crate::glue::intercept::<$plugin>(&PLUGIN, message)
                }
            }

    $crate::bindings::export_interceptor!(Glue with_types_in $crate::bindings);
        };
    };
}

/// What [`export!`] expands to calls: the conversions between the contract's types and the
/// SDK's.
#[doc(hidden)]
pub mod glue {
    use std::sync::OnceLock;

    use crate::bindings::membrane::interceptor::types as wit;
    use crate::{Action, Direction, Edit, Filter, MessageKind, Plugin, Transport, Verdict};

    pub fn init<P: Plugin>(plugin: &OnceLock<P>, config: &str) -> Result<Vec<wit::Filter>, String> {
        let (instance, filters) = P::init(config)?;
        plugin
            .set(instance)
            .map_err(|_| "init was called twice".to_owned())?;
        Ok(filters.into_iter().map(filter).collect())
    }

    #[cfg(target_arch = "wasm32")]
    pub fn intercept<P: Plugin>(plugin: &OnceLock<P>, message: &wit::Message) -> wit::Action {
        // Fail closed: a plugin that was never configured lets nothing through.
        let Some(plugin) = plugin.get() else {
            return wit::Action::Block("the plugin is not initialised".to_owned());
        };
        action(plugin.intercept(&crate::Message::lent(message)))
    }

    pub fn kind(kind: wit::MessageKind) -> MessageKind {
        match kind {
            wit::MessageKind::Request => MessageKind::Request,
            wit::MessageKind::Notification => MessageKind::Notification,
            wit::MessageKind::Response => MessageKind::Response,
            wit::MessageKind::Error => MessageKind::Error,
        }
    }

    pub fn direction(direction: wit::Direction) -> Direction {
        match direction {
            wit::Direction::ClientToServer => Direction::ClientToServer,
            wit::Direction::ServerToClient => Direction::ServerToClient,
        }
    }

    pub fn transport(transport: wit::TransportType) -> Transport {
        match transport {
            wit::TransportType::Stdio => Transport::Stdio,
            wit::TransportType::StreamableHttp => Transport::StreamableHttp,
        }
    }

    fn filter(filter: Filter) -> wit::Filter {
        wit::Filter {
            methods: filter.methods,
            directions: filter
                .directions
                .into_iter()
                .map(|direction| match direction {
                    Direction::ClientToServer => wit::Direction::ClientToServer,
                    Direction::ServerToClient => wit::Direction::ServerToClient,
                })
                .collect(),
            kinds: filter
                .kinds
                .into_iter()
                .map(|kind| match kind {
                    MessageKind::Request => wit::MessageKind::Request,
                    MessageKind::Notification => wit::MessageKind::Notification,
                    MessageKind::Response => wit::MessageKind::Response,
                    MessageKind::Error => wit::MessageKind::Error,
                })
                .collect(),
        }
    }

    fn edits(edits: Vec<Edit>) -> wit::Change {
        wit::Change::Edits(
            edits
                .into_iter()
                .map(|edit| wit::Edit {
                    pointer: edit.pointer,
                    value: edit.value,
                })
                .collect(),
        )
    }

    fn verdict(verdict: Verdict) -> wit::Verdict {
        match verdict {
            Verdict::Continue => wit::Verdict::Continue,
            Verdict::Modify(json) => wit::Verdict::Modify(wit::Change::Replace(json)),
            Verdict::Edit(list) => wit::Verdict::Modify(edits(list)),
            Verdict::Patch(patch) => wit::Verdict::Modify(wit::Change::Patch(patch)),
            Verdict::Block(reason) => wit::Verdict::Block(reason),
            Verdict::Mock(result) => wit::Verdict::Mock(result),
        }
    }

    pub fn action(action: Action) -> wit::Action {
        match action {
            Action::Continue => wit::Action::Continue,
            Action::Modify(json) => wit::Action::Modify(wit::Change::Replace(json)),
            Action::Edit(list) => wit::Action::Modify(edits(list)),
            Action::Patch(patch) => wit::Action::Modify(wit::Change::Patch(patch)),
            Action::Block(reason) => wit::Action::Block(reason),
            Action::Mock(result) => wit::Action::Mock(result),
            Action::Pause(millis) => wit::Action::Pause(millis),
            Action::Delay { millis, then } => wit::Action::Delay(wit::Delay {
                millis,
                then: verdict(then),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The example of the crate's documentation, as a plugin author writes it.
    struct NoRmRf;

    impl Plugin for NoRmRf {
        fn init(_config: &str) -> Result<(Self, Vec<Filter>), String> {
            Ok((NoRmRf, vec![Filter::requests(["tools/call"])]))
        }

        fn intercept(&self, message: &Message) -> Action {
            match message.tool_call() {
                Some(call) if call.mentions("rm -rf") => Action::block("rm -rf is not allowed"),
                _ => Action::Continue,
            }
        }
    }

    export!(NoRmRf);

    #[test]
    fn a_plugin_decides_natively() {
        let (plugin, filters) = NoRmRf::init("{}").unwrap();
        assert_eq!(filters[0].methods, ["tools/call"]);
        let nested = testing::tool_call("shell", json!({"steps": [{"run": "sudo rm -rf /"}]}));
        assert_eq!(
            plugin.intercept(&nested),
            Action::Block("rm -rf is not allowed".into())
        );
        let fine = testing::tool_call("shell", json!({"run": "ls"}));
        assert_eq!(plugin.intercept(&fine), Action::Continue);
    }

    #[test]
    fn a_tool_call_is_read_from_the_params_whatever_the_spacing() {
        let message = testing::with_json(
            testing::tool_call("x", json!({})),
            r#"{ "jsonrpc" : "2.0", "id" : 3, "method" : "tools/call",
            "params" : { "name" : "delete_x", "arguments" : { "path" : "/etc" } } }"#,
        );
        let call = message.tool_call().unwrap();
        assert_eq!(call.name, "delete_x");
        assert_eq!(call.arguments["path"], "/etc");
        assert_eq!(
            message.pointer("/params/arguments/path"),
            Some(json!("/etc"))
        );
        assert_eq!(message.pointer("/params/missing"), None);
        // Only a client's tools/call request is a tool call.
        let answer = testing::response("tools/call", json!({"content": []}));
        assert!(answer.tool_call().is_none());
        let other = testing::request("tools/list", json!({}));
        assert!(other.tool_call().is_none());
    }

    #[test]
    fn an_answer_names_the_tool_of_its_request() {
        let call = testing::tool_call("search", json!({"query": "rust"}));
        let answer = testing::answer(&call, json!({"content": []}));
        assert_eq!(answer.tool_name().as_deref(), Some("search"));
        assert_eq!(
            answer.request_get("/params/arguments/query").as_deref(),
            Some(r#""rust""#)
        );
        assert!(answer.tool_call().is_none(), "an answer is not a call");
        let list = testing::response("tools/list", json!({"tools": []}));
        assert_eq!(list.tool_name(), None);
    }

    #[test]
    fn the_session_store_and_log_work_natively() {
        testing::reset();
        assert_eq!(host::session_kv::increment("calls", 2), Ok(2));
        assert_eq!(host::session_kv::increment("calls", 3), Ok(5));
        host::session_kv::set("name", "x").unwrap();
        assert!(host::session_kv::increment("name", 1).is_err());
        host::session_kv::delete("calls");
        assert_eq!(host::session_kv::get("calls"), None);
        host::log(host::Level::Info, "hello");
        assert_eq!(testing::logs(), [(host::Level::Info, "hello".to_owned())]);
        testing::reset();
        assert_eq!(host::session_kv::get("name"), None);
    }
}
