//! `/v1/sessions`: every session the store keeps (served here or by another replica), with
//! what this process knows of those it serves (counts of messages and verdicts, pending
//! requests, last activity); one session with its plugins' state sizes; ending one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Admin, failure, timestamp};
use crate::session::{Activity, Session, SessionError, SessionId, SessionStatus};
use crate::transport::TransportType;

/// The most sessions one page holds.
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
pub(super) struct Filters {
    principal: Option<String>,
    transport: Option<TransportType>,
    min_age_s: Option<u64>,
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<String>,
}

#[derive(Debug, Serialize)]
struct View {
    id: SessionId,
    client_transport: TransportType,
    upstream_transport: TransportType,
    protocol_version: Option<String>,
    principal: Option<String>,
    client_info: Option<Box<serde_json::value::RawValue>>,
    server_info: Option<Box<serde_json::value::RawValue>>,
    status: SessionStatus,
    /// Served by this process now.
    live: bool,
    created_at: String,
    last_active: Option<String>,
    messages: Option<Messages>,
    verdicts: Option<Verdicts>,
    pending_requests: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin_state_bytes: Option<BTreeMap<String, u64>>,
}

#[derive(Debug, Serialize)]
struct Messages {
    client_to_server: u64,
    server_to_client: u64,
}

#[derive(Debug, Serialize)]
struct Verdicts {
    blocked: u64,
    mocked: u64,
    modified: u64,
    held: u64,
}

impl View {
    fn of(session: Session, activity: Option<Activity>) -> Self {
        Self {
            live: activity.is_some(),
            last_active: activity.as_ref().map(|a| timestamp(a.last_active)),
            messages: activity.as_ref().map(|a| Messages {
                client_to_server: a.client_to_server,
                server_to_client: a.server_to_client,
            }),
            verdicts: activity.as_ref().map(|a| Verdicts {
                blocked: a.blocked,
                mocked: a.mocked,
                modified: a.modified,
                held: a.held,
            }),
            pending_requests: activity.map(|a| a.pending_requests),
            principal: session.principal.as_ref().map(|p| p.subject.clone()),
            created_at: timestamp(session.created_at),
            id: session.id,
            client_transport: session.client_transport,
            upstream_transport: session.upstream_transport,
            protocol_version: session.protocol_version,
            client_info: session.client_info,
            server_info: session.server_info,
            status: session.status,
            plugin_state_bytes: None,
        }
    }
}

impl Admin {
    fn view(&self, session: Session) -> View {
        let activity = self
            .app
            .pipeline
            .sessions
            .live(&session.id)
            .map(|live| live.activity());
        View::of(session, activity)
    }
}

fn unavailable(e: SessionError) -> Response {
    failure(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("cannot read the session store: {e}"),
    )
}

pub(super) async fn list(
    State(admin): State<Arc<Admin>>,
    Query(filters): Query<Filters>,
) -> Response {
    let mut sessions = match admin.app.pipeline.sessions.list().await {
        Ok(sessions) => sessions,
        Err(e) => return unavailable(e),
    };
    let now = SystemTime::now();
    sessions.retain(|s| {
        let age = now.duration_since(s.created_at).unwrap_or_default();
        filters.principal.as_ref().is_none_or(|p| {
            s.principal
                .as_ref()
                .is_some_and(|principal| &principal.subject == p)
        }) && filters
            .transport
            .is_none_or(|t| s.client_transport == t || s.upstream_transport == t)
            && filters
                .min_age_s
                .is_none_or(|min| age >= Duration::from_secs(min))
    });
    sessions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    if let Some(after) = &filters.after {
        let start = sessions
            .iter()
            .position(|s| s.id.as_str() == after)
            .map_or(0, |i| i + 1);
        sessions.drain(..start);
    }
    let limit = filters.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let next = (sessions.len() > limit).then(|| sessions[limit - 1].id.clone());
    sessions.truncate(limit);
    let views: Vec<View> = sessions.into_iter().map(|s| admin.view(s)).collect();
    Json(serde_json::json!({ "sessions": views, "next": next })).into_response()
}

pub(super) async fn show(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let id = SessionId::from(id.as_str());
    let sessions = &admin.app.pipeline.sessions;
    let session = match sessions.get(&id).await {
        Ok(Some(session)) => session,
        Ok(None) => return no_such_session(),
        Err(e) => return unavailable(e),
    };
    let mut view = admin.view(session);
    view.plugin_state_bytes = sessions.kv_sizes(&id).await.ok();
    Json(view).into_response()
}

/// Ends a session: served here, it winds down (its upstream session or child process ends
/// with it); kept in a durable store only, it is removed there (the replica serving it, if
/// any, hears of the removal and ends it).
pub(super) async fn end(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let id = SessionId::from(id.as_str());
    let sessions = &admin.app.pipeline.sessions;
    if sessions.close(&id) {
        tracing::info!(session = %id.redacted(), "session ended by the admin API");
        return StatusCode::NO_CONTENT.into_response();
    }
    match sessions.get(&id).await {
        Ok(Some(_)) => match sessions.remove(&id, false).await {
            Ok(()) => {
                tracing::info!(session = %id.redacted(), "session removed by the admin API");
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => unavailable(e),
        },
        Ok(None) => no_such_session(),
        Err(e) => unavailable(e),
    }
}

fn no_such_session() -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "no such session; list them with GET /v1/sessions",
    )
}
