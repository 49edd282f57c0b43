//! `/v1/held`: the messages interceptors hold for a human, and settling them. An operator
//! names the digest of the message they saw: a stale digest, or a message already settled,
//! timed out or ended with its session, gets 409, and of racing settlements exactly one wins.
//! A replacement message is checked as a plugin's would be, and must keep the kind and id of
//! the message it replaces (or its answer would reach nobody).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Admin, failure, timestamp};
use crate::interceptor::{PausedMessage, Resolution, SettleError};
use crate::protocol::{Direction, Message, MessageKind};
use crate::session::SessionId;

/// A held message, as the API shows it.
#[derive(Debug, Serialize)]
pub(super) struct HeldView {
    id: u64,
    session: SessionId,
    direction: Direction,
    method: Option<String>,
    tool: Option<String>,
    arguments: Option<serde_json::Value>,
    message: serde_json::Value,
    digest: String,
    plugin: Option<String>,
    chain_version: u64,
    held_since: String,
    deadline: String,
}

impl From<&PausedMessage> for HeldView {
    fn from(paused: &PausedMessage) -> Self {
        let message = paused.message.to_value().unwrap_or_default();
        let params = &message["params"];
        let is_call = paused.method.as_deref() == Some("tools/call");
        Self {
            id: paused.id,
            session: paused.session_id.clone(),
            direction: paused.direction,
            method: paused.method.clone(),
            tool: is_call
                .then(|| params["name"].as_str().map(str::to_owned))
                .flatten(),
            arguments: is_call.then(|| params["arguments"].clone()),
            digest: paused.digest.clone(),
            plugin: paused.plugin.as_deref().map(str::to_owned),
            chain_version: paused.chain_version,
            held_since: timestamp(paused.since),
            deadline: timestamp(paused.deadline),
            message,
        }
    }
}

pub(super) async fn list(State(admin): State<Arc<Admin>>) -> Json<Vec<HeldView>> {
    let held = admin.app.pipeline.pauses.paused();
    Json(held.iter().map(HeldView::from).collect())
}

/// What an operator sends to settle a message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settlement {
    digest: String,
    reason: Option<String>,
    message: Option<serde_json::Value>,
}

pub(super) async fn settle(
    State(admin): State<Arc<Admin>>,
    Path((id, verdict)): Path<(u64, String)>,
    body: Result<Json<Settlement>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(settlement)) = body else {
        return failure(
            StatusCode::BAD_REQUEST,
            r#"send a JSON body {"digest": "sha256:..."} naming the digest of the held message you saw (GET /v1/held)"#,
        );
    };
    let pauses = &admin.app.pipeline.pauses;
    let (resolution, outcome) = match verdict.as_str() {
        "approve" => (Resolution::Resume, "approved"),
        "deny" => {
            let reason = settlement
                .reason
                .clone()
                .unwrap_or_else(|| "denied by an operator".into());
            (Resolution::Block { reason }, "denied")
        }
        "modify" => {
            let held = pauses.held(id);
            match replacement(settlement.message.as_ref(), held.as_ref()) {
                Ok(message) => (Resolution::Modify(message), "modified"),
                Err(e) => return failure(StatusCode::BAD_REQUEST, &e),
            }
        }
        _ => {
            return failure(
                StatusCode::NOT_FOUND,
                "settle a held message with /approve, /deny or /modify",
            );
        }
    };
    match pauses.settle(id, &settlement.digest, resolution, "admin API") {
        Ok(()) => {
            tracing::info!(
                held = id,
                outcome,
                by = "admin API",
                reason = settlement.reason.as_deref(),
                "held message settled"
            );
            Json(serde_json::json!({ "id": id, "settled": outcome })).into_response()
        }
        Err(e @ SettleError::Unknown(_)) => failure(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => failure(StatusCode::CONFLICT, &e.to_string()),
    }
}

/// The replacement for a held message, checked: one valid JSON-RPC message (no batch) of the
/// same kind, with the same id.
fn replacement(
    message: Option<&serde_json::Value>,
    held: Option<&PausedMessage>,
) -> Result<Message, String> {
    let message = message.ok_or("a modification needs the replacement in \"message\"")?;
    let message = Message::new(message.to_string());
    let kind = message
        .validate()
        .map_err(|e| format!("the replacement is not a valid message: {e}"))?;
    if kind == MessageKind::Batch {
        return Err("the replacement must be one message, not a batch".into());
    }
    if let Some(held) = held {
        if held.message.kind() != Some(kind) {
            return Err("the replacement must be of the same kind (request, notification, answer) as the held message".into());
        }
        if held.message.id().map(crate::protocol::id_key)
            != message.id().map(crate::protocol::id_key)
        {
            return Err("the replacement must keep the held message's id".into());
        }
    }
    Ok(message)
}
