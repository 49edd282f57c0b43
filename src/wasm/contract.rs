//! The contract lines this host serves, and the translation between each and membrane's own
//! types. `membrane:interceptor@0.2` (`wit/`) hands a plugin the message as a resource it
//! reads on demand ([`super::view`]) and takes changes as a replacement, a JSON Patch or
//! pointer edits; `@0.1` (its last release, 0.1.2, frozen under `wit/released/`) hands the
//! plugin the message's text and envelope whole, and takes whole replacements. A 0.1 decision
//! is read as the 0.2 decision it always meant, so one function turns either into an
//! [`InterceptAction`].

use std::time::Duration;

use serde_json::value::RawValue;
use wasmtime::Store;
use wasmtime::component::{InstancePre, Resource, TypedFunc};

use super::bindings::current::membrane::interceptor::types as wit;
use super::bindings::v0_1::membrane::interceptor::types as wit_0_1;
use super::bindings::{current, v0_1};
use super::host::PluginState;
use super::view::{MessageView, ViewedMessage};
use crate::interceptor::{Filter, InterceptAction, InterceptContext, InterceptError};
use crate::protocol::{Direction, Message, MessageKind, result_response};
use crate::transport::TransportType;

/// A plugin linked and type-checked against the contract line it was built for.
pub(super) enum PluginPre {
    Current(current::StatefulInterceptorPre<PluginState>),
    V0_1(v0_1::StatefulInterceptorPre<PluginState>),
}

/// What a plugin decided, as 0.2 spells it (a 0.1 decision is read as the 0.2 one it meant).
pub(super) type Decision = wit::Action;

/// An instance of a plugin, on its contract line.
pub(super) enum Plugin {
    Current(current::StatefulInterceptor),
    V0_1(v0_1::StatefulInterceptor),
    /// A 0.2 instance for direct calls ([`super::direct`]): its `intercept`, called without a
    /// fiber.
    Direct(TypedFunc<(Resource<ViewedMessage>,), (wit::Action,)>),
}

/// Instantiates a 0.2 plugin for direct calls and configures it: the instance, and `init`'s
/// answer. An error leaves the plugin to fibers.
pub(super) fn start_direct(
    pre: &InstancePre<PluginState>,
    store: &mut Store<PluginState>,
    config: &str,
) -> wasmtime::Result<(Plugin, Result<Vec<Filter>, String>)> {
    let instance = pre.instantiate(&mut *store)?;
    type Init = TypedFunc<(String,), (Result<Vec<wit::Filter>, String>,)>;
    let init: Init = instance.get_typed_func(&mut *store, "init")?;
    let intercept = instance.get_typed_func(&mut *store, "intercept")?;
    let (declared,) = init.call(&mut *store, (config.to_owned(),))?;
    let declared = declared.map(|declared| declared.iter().map(filter_from).collect());
    Ok((Plugin::Direct(intercept), declared))
}

impl PluginPre {
    /// Checks the component's exports against 0.2, then 0.1; the error is 0.2's.
    pub(super) fn new(pre: InstancePre<PluginState>) -> wasmtime::Result<Self> {
        match current::StatefulInterceptorPre::new(pre.clone()) {
            Ok(current) => Ok(Self::Current(current)),
            Err(e) => v0_1::StatefulInterceptorPre::new(pre)
                .map(Self::V0_1)
                .map_err(|_| e),
        }
    }

    pub(super) async fn instantiate_async(
        &self,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<Plugin> {
        Ok(match self {
            Self::Current(pre) => Plugin::Current(pre.instantiate_async(store).await?),
            Self::V0_1(pre) => Plugin::V0_1(pre.instantiate_async(store).await?),
        })
    }
}

impl Plugin {
    /// Configures an instance made for calls on fibers; the plugin's refusal is the inner
    /// error.
    pub(super) async fn init(
        &self,
        store: &mut Store<PluginState>,
        config: &str,
    ) -> wasmtime::Result<Result<Vec<Filter>, String>> {
        Ok(match self {
            Self::Current(plugin) => plugin
                .call_init(store, config)
                .await?
                .map(|declared| declared.iter().map(filter_from).collect()),
            Self::V0_1(plugin) => plugin.call_init(store, config).await?.map(|declared| {
                declared
                    .iter()
                    .map(|f| filter_from(&upgrade_filter(f)))
                    .collect()
            }),
            Self::Direct(_) => {
                return Err(wasmtime::format_err!(
                    "a direct instance is configured as it starts"
                ));
            }
        })
    }

    /// Asks the plugin about `ctx`'s message, of kind `kind` (never a batch); its decision as
    /// 0.2 spells it. A direct call is over by the first poll.
    pub(super) async fn intercept(
        &self,
        store: &mut Store<PluginState>,
        ctx: &InterceptContext,
        kind: MessageKind,
    ) -> wasmtime::Result<wit::Action> {
        match self {
            Self::Current(plugin) => {
                store.data_mut().view = MessageView::of(ctx, kind);
                let action = plugin
                    .call_intercept(&mut *store, MessageView::handle())
                    .await;
                store.data_mut().view = None;
                action
            }
            Self::Direct(_) => self.intercept_directly(store, ctx, kind),
            Self::V0_1(plugin) => {
                let message = wit_0_1::Message {
                    json: ctx.message.as_str(),
                    kind: match kind {
                        MessageKind::Request => wit_0_1::MessageKind::Request,
                        MessageKind::Notification => wit_0_1::MessageKind::Notification,
                        MessageKind::Response => wit_0_1::MessageKind::Response,
                        MessageKind::Error | MessageKind::Batch => wit_0_1::MessageKind::Error,
                    },
                    method: ctx.method(),
                    id: ctx.message.id(),
                    direction: match ctx.direction {
                        Direction::ClientToServer => wit_0_1::Direction::ClientToServer,
                        Direction::ServerToClient => wit_0_1::Direction::ServerToClient,
                    },
                    session_id: ctx.session_id.as_str(),
                    transport: match ctx.transport_type {
                        TransportType::Stdio => wit_0_1::TransportType::Stdio,
                        TransportType::StreamableHttp => wit_0_1::TransportType::StreamableHttp,
                    },
                    protocol_version: ctx.protocol_version.as_deref(),
                    frame_id: ctx.frame_id,
                };
                Ok(upgrade_action(plugin.call_intercept(store, message).await?))
            }
        }
    }
}

impl Plugin {
    /// [`Plugin::intercept`] on an instance made for direct calls, made at once.
    pub(super) fn intercept_directly(
        &self,
        store: &mut Store<PluginState>,
        ctx: &InterceptContext,
        kind: MessageKind,
    ) -> wasmtime::Result<Decision> {
        let Self::Direct(intercept) = self else {
            return Err(wasmtime::format_err!(
                "the instance is not made for direct calls"
            ));
        };
        store.data_mut().view = MessageView::of(ctx, kind);
        let decided = intercept.call(&mut *store, (MessageView::handle(),));
        store.data_mut().view = None;
        decided.map(|(decision,)| decision)
    }
}

fn upgrade_filter(filter: &wit_0_1::Filter) -> wit::Filter {
    wit::Filter {
        methods: filter.methods.clone(),
        directions: (filter.directions.iter())
            .map(|direction| match direction {
                wit_0_1::Direction::ClientToServer => wit::Direction::ClientToServer,
                wit_0_1::Direction::ServerToClient => wit::Direction::ServerToClient,
            })
            .collect(),
        kinds: (filter.kinds.iter())
            .map(|kind| match kind {
                wit_0_1::MessageKind::Request => wit::MessageKind::Request,
                wit_0_1::MessageKind::Notification => wit::MessageKind::Notification,
                wit_0_1::MessageKind::Response => wit::MessageKind::Response,
                wit_0_1::MessageKind::Error => wit::MessageKind::Error,
            })
            .collect(),
    }
}

fn upgrade_verdict(verdict: wit_0_1::Verdict) -> wit::Verdict {
    match verdict {
        wit_0_1::Verdict::Continue => wit::Verdict::Continue,
        wit_0_1::Verdict::Modify(json) => wit::Verdict::Modify(wit::Change::Replace(json)),
        wit_0_1::Verdict::Block(reason) => wit::Verdict::Block(reason),
        wit_0_1::Verdict::Mock(result) => wit::Verdict::Mock(result),
    }
}

fn upgrade_action(action: wit_0_1::Action) -> wit::Action {
    match action {
        wit_0_1::Action::Continue => wit::Action::Continue,
        wit_0_1::Action::Modify(json) => wit::Action::Modify(wit::Change::Replace(json)),
        wit_0_1::Action::Block(reason) => wit::Action::Block(reason),
        wit_0_1::Action::Mock(result) => wit::Action::Mock(result),
        wit_0_1::Action::Pause(millis) => wit::Action::Pause(millis),
        wit_0_1::Action::Delay(delay) => wit::Action::Delay(wit::Delay {
            millis: delay.millis,
            then: upgrade_verdict(delay.then),
        }),
    }
}

fn filter_from(declared: &wit::Filter) -> Filter {
    let directions: Vec<Direction> = (declared.directions.iter())
        .map(|d| match d {
            wit::Direction::ClientToServer => Direction::ClientToServer,
            wit::Direction::ServerToClient => Direction::ServerToClient,
        })
        .collect();
    let kinds: Vec<MessageKind> = (declared.kinds.iter())
        .map(|k| match k {
            wit::MessageKind::Request => MessageKind::Request,
            wit::MessageKind::Notification => MessageKind::Notification,
            wit::MessageKind::Response => MessageKind::Response,
            wit::MessageKind::Error => MessageKind::Error,
        })
        .collect();
    Filter::new(&declared.methods, &directions, &kinds)
}

/// What a plugin's decision on `message` means to the chain; a broken one is an error.
pub(super) fn action_from(
    action: wit::Action,
    message: &Message,
) -> Result<InterceptAction, InterceptError> {
    let verdict = match action {
        wit::Action::Pause(millis) => {
            let timeout = Duration::from_millis(millis);
            return Ok(InterceptAction::Pause { timeout });
        }
        wit::Action::Delay(delay) => {
            return Ok(InterceptAction::Delay {
                duration: Duration::from_millis(delay.millis),
                then: Box::new(verdict_from(delay.then, message)?),
            });
        }
        wit::Action::Continue => wit::Verdict::Continue,
        wit::Action::Modify(change) => wit::Verdict::Modify(change),
        wit::Action::Block(reason) => wit::Verdict::Block(reason),
        wit::Action::Mock(result) => wit::Verdict::Mock(result),
    };
    verdict_from(verdict, message)
}

fn verdict_from(
    verdict: wit::Verdict,
    message: &Message,
) -> Result<InterceptAction, InterceptError> {
    Ok(match verdict {
        wit::Verdict::Continue => InterceptAction::Continue,
        wit::Verdict::Modify(change) => {
            // Checked here so the plugin's metrics see a broken action as one; the envelope is
            // parsed once either way.
            let changed = changed(message, change)?;
            match changed.validate() {
                Ok(MessageKind::Batch) => {
                    return Err(InterceptError("replaced a message with a batch".into()));
                }
                Ok(_) => InterceptAction::Modify(changed),
                Err(e) => {
                    return Err(InterceptError(format!(
                        "changed a message into an invalid one: {e}"
                    )));
                }
            }
        }
        wit::Verdict::Block(reason) => InterceptAction::Block { reason },
        wit::Verdict::Mock(result) => {
            let id = message
                .id()
                .ok_or_else(|| InterceptError("mocked a message that has no id".into()))?;
            let result = RawValue::from_string(result)
                .map_err(|e| InterceptError(format!("mock result is not JSON: {e}")))?;
            InterceptAction::Mock {
                response: result_response(id, &result),
            }
        }
    })
}

/// `message` with `change` made to it.
fn changed(message: &Message, change: wit::Change) -> Result<Message, InterceptError> {
    let operations = match change {
        wit::Change::Replace(json) => return Ok(Message::new(json)),
        wit::Change::Patch(patch) => serde_json::from_str::<json_patch::Patch>(&patch)
            .map_err(|e| InterceptError(format!("the patch is not a JSON Patch: {e}")))?,
        wit::Change::Edits(edits) => return edited(message, edits),
    };
    let mut value = message
        .to_value()
        .map_err(|e| InterceptError(e.to_string()))?;
    json_patch::patch(&mut value, &operations)
        .map_err(|e| InterceptError(format!("the patch does not apply: {e}")))?;
    Ok(Message::from_value(&value))
}

/// `message` with each edit made in order: a value set at a pointer (added to an object,
/// replacing an array's element, `-` appending) or removed.
fn edited(message: &Message, edits: Vec<wit::Edit>) -> Result<Message, InterceptError> {
    let mut value = message
        .to_value()
        .map_err(|e| InterceptError(e.to_string()))?;
    for edit in edits {
        let bad = |why: String| InterceptError(format!("edit at {:?}: {why}", edit.pointer));
        let Some((parent, last)) = edit.pointer.rsplit_once('/') else {
            return Err(bad("not a JSON pointer (it must start with `/`)".into()));
        };
        let last = last.replace("~1", "/").replace("~0", "~");
        let parent = value
            .pointer_mut(parent)
            .ok_or_else(|| bad("no value holds it".into()))?;
        let new = match &edit.value {
            Some(json) => Some(
                serde_json::from_str::<serde_json::Value>(json)
                    .map_err(|e| bad(format!("the value is not JSON: {e}")))?,
            ),
            None => None,
        };
        match (parent, new) {
            (serde_json::Value::Object(members), Some(new)) => {
                members.insert(last, new);
            }
            (serde_json::Value::Object(members), None) => {
                members.remove(&last);
            }
            (serde_json::Value::Array(elements), new) => {
                let index = if last == "-" {
                    elements.len()
                } else {
                    last.parse::<usize>()
                        .map_err(|_| bad("not an index of the array".into()))?
                };
                match new {
                    Some(new) if index == elements.len() && last == "-" => elements.push(new),
                    Some(new) => {
                        *elements
                            .get_mut(index)
                            .ok_or_else(|| bad("past the end of the array".into()))? = new;
                    }
                    None if index < elements.len() => {
                        elements.remove(index);
                    }
                    None => {}
                }
            }
            _ => return Err(bad("its parent is neither an object nor an array".into())),
        }
    }
    Ok(Message::from_value(&value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn change(change: wit::Change) -> Result<serde_json::Value, String> {
        let message = Message::from_value(&json!({
            "jsonrpc": "2.0", "id": 1, "result": {"content": [{"text": "a"}, {"text": "b"}], "n": 1}
        }));
        let changed = changed(&message, change).map_err(|e| e.0)?;
        changed.to_value().map_err(|e| e.to_string())
    }

    fn edit(pointer: &str, value: Option<&str>) -> wit::Edit {
        wit::Edit {
            pointer: pointer.into(),
            value: value.map(str::to_owned),
        }
    }

    #[test]
    fn edits_set_replace_append_and_remove_in_order() {
        let edited = change(wit::Change::Edits(vec![
            edit("/result/content/0/text", Some(r#""x""#)),
            edit("/result/content/-", Some(r#"{"text": "c"}"#)),
            edit("/result/n", None),
            edit("/result/missing", None),
            edit("/result/flag", Some("true")),
        ]))
        .unwrap();
        assert_eq!(
            edited["result"],
            json!({"content": [{"text": "x"}, {"text": "b"}, {"text": "c"}], "flag": true})
        );
        let removed = change(wit::Change::Edits(vec![edit("/result/content/0", None)])).unwrap();
        assert_eq!(removed["result"]["content"], json!([{"text": "b"}]));
    }

    #[test]
    fn a_json_patch_applies_or_says_why_not() {
        let patch = r#"[{"op": "replace", "path": "/result/n", "value": 2},
                        {"op": "remove", "path": "/result/content/1"}]"#;
        let patched = change(wit::Change::Patch(patch.into())).unwrap();
        assert_eq!(
            patched["result"],
            json!({"content": [{"text": "a"}], "n": 2})
        );
        let missing = r#"[{"op": "remove", "path": "/result/nope"}]"#;
        assert!(
            change(wit::Change::Patch(missing.into()))
                .unwrap_err()
                .contains("does not apply")
        );
        assert!(
            change(wit::Change::Patch("{}".into()))
                .unwrap_err()
                .contains("not a JSON Patch")
        );
    }

    #[test]
    fn bad_edits_are_refused_with_their_pointer() {
        for (edit, why) in [
            (edit("result", Some("1")), "not a JSON pointer"),
            (edit("/nope/x", Some("1")), "no value holds it"),
            (edit("/result/content/9", Some("1")), "past the end"),
            (edit("/result/content/x", Some("1")), "not an index"),
            (edit("/result/n", Some("{")), "not JSON"),
            (
                edit("/result/n/x", Some("1")),
                "neither an object nor an array",
            ),
        ] {
            let error = change(wit::Change::Edits(vec![edit])).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
    }
}
