//! `/v1/events`: what happens, as it happens, for consoles: messages held and settled,
//! sessions opened and closed, reloads done or refused, as Server-Sent Events. A consumer too
//! slow to keep up gets a `lagged` event (refresh, then follow on) rather than stalling anyone.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};

use super::Admin;
use super::held::HeldView;
use crate::app::ReloadNotice;
use crate::interceptor::PauseEvent;
use crate::session::SessionNotice;

struct Feeds {
    pauses: broadcast::Receiver<PauseEvent>,
    sessions: broadcast::Receiver<SessionNotice>,
    reloads: broadcast::Receiver<ReloadNotice>,
}

pub(super) async fn events(
    State(admin): State<Arc<Admin>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feeds = Feeds {
        pauses: admin.app.pipeline.pauses.subscribe(),
        sessions: admin.app.pipeline.sessions.subscribe(),
        reloads: admin.app.subscribe_reloads(),
    };
    let stream = futures::stream::unfold(feeds, |mut feeds| async move {
        let event = tokio::select! {
            event = feeds.pauses.recv() => event.map(pause_event),
            notice = feeds.sessions.recv() => notice.map(session_event),
            notice = feeds.reloads.recv() => notice.map(reload_event),
        };
        let event = match event {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => Event::default()
                .event("lagged")
                .data(json!({ "missed": missed }).to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), feeds))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn event(kind: &str, data: serde_json::Value) -> Event {
    Event::default().event(kind).data(data.to_string())
}

fn pause_event(pause: PauseEvent) -> Event {
    match pause {
        PauseEvent::Held(paused) => event(
            "held",
            serde_json::to_value(HeldView::from(&paused)).unwrap_or_default(),
        ),
        PauseEvent::Settled {
            id,
            session_id,
            outcome,
            by,
            ..
        } => event(
            "settled",
            json!({ "id": id, "session": session_id, "outcome": outcome.name(), "by": by }),
        ),
    }
}

fn session_event(notice: SessionNotice) -> Event {
    match notice {
        SessionNotice::Opened(session) => event(
            "session_opened",
            json!({
                "id": session.id,
                "client_transport": session.client_transport,
                "upstream_transport": session.upstream_transport,
                "principal": session.principal.as_ref().map(|p| &p.subject),
            }),
        ),
        SessionNotice::Closed(id) => event("session_closed", json!({ "id": id })),
    }
}

fn reload_event(notice: ReloadNotice) -> Event {
    match notice {
        ReloadNotice::Done(report) => event(
            "reload",
            json!({
                "ok": true,
                "loaded": report.loaded,
                "kept": report.kept,
                "removed": report.removed,
            }),
        ),
        ReloadNotice::Refused(error) => event("reload", json!({ "ok": false, "error": error })),
    }
}
