//! The operator's room: the admin API on a listener of its own (never the MCP port). It lists
//! and ends sessions, shows held messages and settles them ([`held`]), streams live events
//! ([`live`]), describes the plugins and reloads them ([`plugins`]), exports Prometheus metrics,
//! answers health probes, and serves the web console's static files ([`console`]). Everything
//! but `/healthz`, `/readyz` and the console's files needs the bearer token from
//! `[admin] token_file`. It reads the rooms it reports on; it never touches the message path.

mod console;
pub mod ctl;
mod held;
mod live;
mod plugins;
mod sessions;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use subtle::ConstantTimeEq;

use crate::app::{App, Reloader};

/// What the admin API reports on and acts through.
pub struct Admin {
    pub app: Arc<App>,
    pub reloader: Reloader,
    token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("[admin] token_file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("[admin] token_file {0} is empty: write a long random token into it")]
    EmptyToken(String),
}

impl Admin {
    /// An admin API for `app`, its token read from `token_file`.
    pub fn new(app: Arc<App>, reloader: Reloader, token_file: &Path) -> Result<Self, AdminError> {
        let path = token_file.display().to_string();
        let token = std::fs::read_to_string(token_file)
            .map_err(|source| AdminError::Token {
                path: path.clone(),
                source,
            })?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(AdminError::EmptyToken(path));
        }
        Ok(Self {
            app,
            reloader,
            token,
        })
    }

    /// The routes: `/v1/...`, `/metrics`, the probes and the console.
    pub fn router(self: Arc<Self>) -> Router {
        let guarded = Router::new()
            .route("/v1/sessions", get(sessions::list))
            .route(
                "/v1/sessions/{id}",
                get(sessions::show).delete(sessions::end),
            )
            .route("/v1/held", get(held::list))
            .route("/v1/held/{id}/{verdict}", post(held::settle))
            .route("/v1/events", get(live::events))
            .route("/v1/plugins", get(plugins::list))
            .route("/v1/reload", post(plugins::reload))
            .route("/metrics", get(plugins::metrics))
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                require_token,
            ));
        Router::new()
            .merge(guarded)
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .merge(console::routes())
            .fallback(|| async {
                failure(StatusCode::NOT_FOUND, "no such admin endpoint; see /v1/...")
            })
            .with_state(self)
    }
}

/// Refuses a request without the admin token.
async fn require_token(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(admin.token.as_bytes())) => {
            next.run(request).await
        }
        _ => {
            let mut response = failure(
                StatusCode::UNAUTHORIZED,
                "the admin API needs `Authorization: Bearer <token>` with the token in [admin] token_file",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
            response
        }
    }
}

/// Ready once the plugins are loaded (they are, before the listener starts) and the store
/// answers.
async fn ready(State(admin): State<Arc<Admin>>) -> Response {
    match admin.app.pipeline.sessions.store_answers().await {
        Ok(()) => "ready".into_response(),
        Err(e) => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the session store does not answer: {e}"),
        ),
    }
}

/// A JSON error an operator (or `membrane ctl`) can act on.
fn failure(status: StatusCode, error: &str) -> Response {
    (status, Json(serde_json::json!({ "error": error }))).into_response()
}

/// RFC 3339 with milliseconds, in UTC.
fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}
