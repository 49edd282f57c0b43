//! The checks every request to the HTTP front passes, each a small middleware or extractor
//! that answers with its own status and a JSON-RPC error body ([`Refusal`]):
//!
//! - [`host`]: `Host` must be a name clients use to reach membrane (403; DNS rebinding);
//! - [`origin`]: a browser's `Origin` must be loopback or allowed (403);
//! - [`authenticate`]: a valid bearer token when `[auth]` is on (401 with the resource metadata
//!   URL, 503 when tokens cannot be checked); the [`Caller`] it finds goes with the request;
//! - [`Version`]: a known `MCP-Protocol-Version` (400); [`Stateful`]: GET and DELETE only where
//!   the revision has sessions (405);
//! - [`AcceptsMcp`] / [`AcceptsEvents`]: what the client accepts (406);
//! - [`McpBody`]: `Content-Type` (415), size (413), arrival within the body timeout (408), and
//!   the shared budget of body bytes in flight (503);
//! - [`ClientOf`]: the session the request names (400 without one, 404 for an unknown one or
//!   one that belongs to another principal).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;

use super::{ClientSession, Front};
use crate::auth::{AuthError, Principal};
use crate::protocol::{ErrorCode, error_response};
use crate::session::SessionId;
use crate::transport::streamable_http::{
    DEFAULT_PROTOCOL_VERSION, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, PROTOCOL_VERSIONS,
    STATELESS_PROTOCOL_VERSION, accepts, is_json_content,
};

/// Where the protected resource metadata lives (RFC 9728); `/mcp` is appended for the
/// endpoint's own document.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// Body bytes each request may hold without drawing on the shared budget: ordinary requests
/// are never starved by large bodies that others hold open. Bounded in all by the connection
/// cap.
pub const OWN_BODY_ALLOWANCE: usize = 64 * 1024;

/// How long a body waits for budget before it is refused.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A request membrane turns away: an HTTP status with a JSON-RPC error body.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: ErrorCode, reason: &str) -> Self {
        Self::answering(status, None, code, reason)
    }

    /// A refusal whose error answers the request with id `id`.
    pub fn answering(status: StatusCode, id: Option<&str>, code: ErrorCode, reason: &str) -> Self {
        Self {
            status,
            body: error_response(id, code, reason).raw().clone(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn session_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::InvalidRequest,
            "session not found: it ended or never existed; initialize a new one",
        )
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body,
        )
            .into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

/// The `Host` names a listener answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    loopback: bool,
    any: bool,
    /// Lower-case names, with or without a port.
    names: Vec<String>,
}

impl HostPolicy {
    /// Loopback names when `listen` is a loopback address, plus `allowed` (`*`: any).
    pub fn new(listen: SocketAddr, allowed: &[String]) -> Self {
        Self {
            loopback: listen.ip().is_loopback(),
            any: allowed.iter().any(|name| name == "*"),
            names: allowed
                .iter()
                .map(|name| name.to_ascii_lowercase())
                .collect(),
        }
    }

    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let host = host.to_ascii_lowercase();
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host.as_str(), |(name, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    host.as_str()
                }
            }),
        };
        (self.loopback && is_loopback_name(name))
            || self
                .names
                .iter()
                .any(|allowed| *allowed == host || allowed == name)
    }
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `Host` first of all: a foreign name (a DNS rebinding page) gets 403 before anything else.
pub async fn host(State(front): State<Arc<Front>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match host {
        Some(host) if front.options.hosts.allows(host) => next.run(request).await,
        Some(host) => {
            tracing::warn!(host, "refused a request for a foreign Host");
            Refusal::new(
                StatusCode::FORBIDDEN,
                ErrorCode::InvalidRequest,
                &format!("Host {host} is not served here; list it in [http] allowed_hosts"),
            )
            .into_response()
        }
        None => Refusal::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "missing Host header",
        )
        .into_response(),
    }
}

/// `Origin` is either absent (not a browser), loopback, or allowed by configuration.
pub async fn origin(State(front): State<Arc<Front>>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return next.run(request).await;
    };
    let origin = origin.to_str().unwrap_or("");
    let allowed = front
        .options
        .allowed_origins
        .iter()
        .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
        || is_loopback_origin(origin);
    if allowed {
        return next.run(request).await;
    }
    tracing::warn!(origin, "refused a request from a foreign origin");
    Refusal::new(
        StatusCode::FORBIDDEN,
        ErrorCode::InvalidRequest,
        &format!("origin {origin} is not allowed"),
    )
    .into_response()
}

/// An origin on this machine: `http(s)://localhost`, `127.0.0.1` or `[::1]`, any port.
fn is_loopback_origin(origin: &str) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split(':').next().unwrap_or(""),
    };
    is_loopback_name(&host.to_ascii_lowercase())
}

/// Who sent a request: the principal its token stands for, when authentication is on.
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<Arc<Principal>>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_default())
    }
}

/// A bearer token, when `[auth]` is on: the caller goes with the request; a missing or bad
/// token gets 401 naming where the resource metadata is, so a client can find the
/// authorization server.
pub async fn authenticate(
    State(front): State<Arc<Front>>,
    mut request: Request,
    next: Next,
) -> Response {
    // Layered only when `[auth]` is on.
    let Some(auth) = &front.auth else {
        return next.run(request).await;
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match auth.authenticate(authorization).await {
        Ok(principal) => {
            request.extensions_mut().insert(Caller(Some(principal)));
            next.run(request).await
        }
        Err(AuthError::Unavailable(reason)) => {
            tracing::warn!("cannot check a token: {reason}");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::InvalidRequest,
                &reason,
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
            .into_response()
        }
        Err(error) => {
            let metadata = metadata_url(&front, request.headers());
            let mut challenge = format!("Bearer resource_metadata=\"{metadata}\"");
            if let AuthError::Invalid(reason) = &error {
                tracing::info!("refused a token: {reason}");
                let reason = reason.replace(['"', '\\'], "'");
                challenge.push_str(&format!(
                    ", error=\"invalid_token\", error_description=\"{reason}\""
                ));
            }
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                &error.to_string(),
            )
            .with_header(header::WWW_AUTHENTICATE, header_value(&challenge))
            .into_response()
        }
    }
}

/// 403 for a caller lacking scopes a message needs (RFC 6750 `insufficient_scope`).
pub fn insufficient_scope(
    front: &Front,
    headers: &HeaderMap,
    id: Option<&str>,
    missing: &[String],
) -> Refusal {
    let scopes = missing.join(" ");
    let challenge = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{scopes}\", resource_metadata=\"{}\"",
        metadata_url(front, headers)
    );
    Refusal::answering(
        StatusCode::FORBIDDEN,
        id,
        ErrorCode::Unauthorized,
        &format!("insufficient scope: this request needs {scopes}"),
    )
    .with_header(header::WWW_AUTHENTICATE, header_value(&challenge))
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// The URL of the endpoint as clients reach it: the configured resource, else the request's
/// (already checked) `Host`.
pub fn endpoint_url(front: &Front, headers: &HeaderMap) -> String {
    if let Some(resource) = front
        .auth
        .as_ref()
        .and_then(|auth| auth.metadata.resource.clone())
    {
        return resource;
    }
    let scheme = if front.options.tls { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("localhost");
    format!("{scheme}://{host}/mcp")
}

/// The URL of the endpoint's resource metadata: its origin, the well-known path, its path.
fn metadata_url(front: &Front, headers: &HeaderMap) -> String {
    let endpoint = endpoint_url(front, headers);
    match reqwest::Url::parse(&endpoint) {
        Ok(url) => {
            let origin = url.origin().ascii_serialization();
            let path = url.path().trim_end_matches('/');
            format!("{origin}{METADATA_PATH}{path}")
        }
        Err(_) => format!("{METADATA_PATH}/mcp"),
    }
}

/// The request's protocol revision: its header, or the oldest for clients that send none.
#[derive(Debug, Clone, Copy)]
pub struct Version(pub &'static str);

impl<S: Send + Sync> FromRequestParts<S> for Version {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        protocol_version(&parts.headers).map(Version)
    }
}

fn protocol_version(headers: &HeaderMap) -> Result<&'static str, Refusal> {
    let Some(value) = headers.get(&MCP_PROTOCOL_VERSION) else {
        return Ok(DEFAULT_PROTOCOL_VERSION);
    };
    let value = value.to_str().unwrap_or("");
    PROTOCOL_VERSIONS
        .into_iter()
        .find(|known| *known == value)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                &format!(
                    "unsupported MCP-Protocol-Version {value}; supported: {}",
                    PROTOCOL_VERSIONS.join(", ")
                ),
            )
        })
}

/// GET and DELETE belong to the revisions with sessions; from 2026-07-28 on they are 405.
pub struct Stateful;

impl<S: Send + Sync> FromRequestParts<S> for Stateful {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        if protocol_version(&parts.headers)? >= STATELESS_PROTOCOL_VERSION {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::InvalidRequest,
                "protocol version 2026-07-28 has no sessions and no GET stream",
            ));
        }
        Ok(Stateful)
    }
}

/// A POST's `Accept` lists both JSON and event streams.
pub struct AcceptsMcp;

impl<S: Send + Sync> FromRequestParts<S> for AcceptsMcp {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        if accepts(&parts.headers, "application/json")
            && accepts(&parts.headers, "text/event-stream")
        {
            Ok(AcceptsMcp)
        } else {
            Err(Refusal::new(
                StatusCode::NOT_ACCEPTABLE,
                ErrorCode::InvalidRequest,
                "Accept must list application/json and text/event-stream",
            ))
        }
    }
}

/// A GET's `Accept` lists event streams.
pub struct AcceptsEvents;

impl<S: Send + Sync> FromRequestParts<S> for AcceptsEvents {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        if accepts(&parts.headers, "text/event-stream") {
            Ok(AcceptsEvents)
        } else {
            Err(Refusal::new(
                StatusCode::NOT_ACCEPTABLE,
                ErrorCode::InvalidRequest,
                "Accept must list text/event-stream",
            ))
        }
    }
}

/// A POST's body: declared as JSON, at most the maximum message size, arrived whole within
/// the body timeout, and counted against the budget of body bytes in flight (beyond
/// [`OWN_BODY_ALLOWANCE`]) for as long as the handler holds it.
pub struct McpBody {
    pub bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

impl FromRequest<Arc<Front>> for McpBody {
    type Rejection = Refusal;

    async fn from_request(request: Request, front: &Arc<Front>) -> Result<Self, Refusal> {
        if !is_json_content(request.headers()) {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::InvalidRequest,
                "Content-Type must be application/json",
            ));
        }
        let max = front.options.max_message_size;
        let too_large = || {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::InvalidRequest,
                &format!("the message exceeds the maximum message size of {max} bytes"),
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|len| len.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(too_large());
        }
        let deadline = tokio::time::Instant::now() + front.options.body_timeout;
        let mut body = request.into_body();
        let mut bytes = BytesMut::new();
        let mut budget: Option<OwnedSemaphorePermit> = None;
        // A declared length is reserved at once, so a body that cannot fit fails before it
        // is read.
        if let Some(len) = declared {
            reserve(front, &mut budget, len.saturating_sub(OWN_BODY_ALLOWANCE)).await?;
        }
        loop {
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await
                .map_err(|_| {
                    Refusal::new(
                        StatusCode::REQUEST_TIMEOUT,
                        ErrorCode::InvalidRequest,
                        "the request body did not arrive in time",
                    )
                })?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    &format!("reading the body failed: {e}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if bytes.len() + data.len() > max {
                return Err(too_large());
            }
            let owed = (bytes.len() + data.len()).saturating_sub(OWN_BODY_ALLOWANCE);
            let held = budget.as_ref().map_or(0, |permit| permit.num_permits());
            if owed > held {
                reserve(front, &mut budget, owed - held).await?;
            }
            bytes.extend_from_slice(&data);
        }
        Ok(McpBody {
            bytes: bytes.freeze(),
            _budget: budget,
        })
    }
}

/// Takes `bytes` more of the shared body budget, waiting briefly for it.
async fn reserve(
    front: &Front,
    held: &mut Option<OwnedSemaphorePermit>,
    bytes: usize,
) -> Result<(), Refusal> {
    if bytes == 0 {
        return Ok(());
    }
    let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
    let acquire = front.body_budget.clone().acquire_many_owned(permits);
    match tokio::time::timeout(BUDGET_WAIT, acquire).await {
        Ok(Ok(permit)) => {
            match held {
                Some(held) => held.merge(permit),
                None => *held = Some(permit),
            }
            Ok(())
        }
        _ => {
            tracing::warn!(
                bytes,
                "request body refused: the budget of body bytes in flight is spent"
            );
            Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::InvalidRequest,
                "membrane is receiving too much at once; retry shortly",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")))
        }
    }
}

/// The session a request names, when it belongs to the caller.
pub struct ClientOf(pub Arc<ClientSession>);

impl FromRequestParts<Arc<Front>> for ClientOf {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, front: &Arc<Front>) -> Result<Self, Refusal> {
        let Caller(caller) = Caller::from_request_parts(parts, front)
            .await
            .unwrap_or_default();
        lookup(front, &parts.headers, caller.as_ref())
            .await
            .map(ClientOf)
    }
}

/// The session `Mcp-Session-Id` names: 400 without one, 404 when there is none such or it
/// belongs to another principal (whose sessions are none of the caller's business). One this
/// process does not serve is revived from the session store, when the store outlives it.
pub async fn lookup(
    front: &Arc<Front>,
    headers: &HeaderMap,
    caller: Option<&Arc<Principal>>,
) -> Result<Arc<ClientSession>, Refusal> {
    let Some(id) = headers.get(&MCP_SESSION_ID) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "missing Mcp-Session-Id header (only initialize starts a session)",
        ));
    };
    let id = SessionId::from(id.to_str().unwrap_or(""));
    let client = match front.client(&id) {
        Some(client) => client,
        None if front.options.revive && id.is_well_formed() => {
            super::handlers::revive(front, id, caller.cloned()).await?
        }
        None => return Err(Refusal::session_not_found()),
    };
    if client.belongs_to(caller) {
        Ok(client)
    } else {
        Err(Refusal::session_not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_by_listener_and_allow_list() {
        let loopback = HostPolicy::new("127.0.0.1:8080".parse().unwrap(), &[]);
        for host in ["localhost:8080", "127.0.0.1", "[::1]:9", "LOCALHOST"] {
            assert!(loopback.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1",
        ] {
            assert!(!loopback.allows(host), "{host}");
        }
        let public = HostPolicy::new(
            "0.0.0.0:443".parse().unwrap(),
            &["mcp.example.com".into(), "other.example:8443".into()],
        );
        assert!(public.allows("mcp.example.com") && public.allows("MCP.example.com:443"));
        assert!(public.allows("other.example:8443") && !public.allows("other.example:80"));
        assert!(!public.allows("localhost"), "not bound to loopback");
        assert!(HostPolicy::new("0.0.0.0:1".parse().unwrap(), &["*".into()]).allows("anything"));
    }

    #[test]
    fn loopback_origins() {
        for origin in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "http://[::1]:8080",
        ] {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in [
            "https://evil.example",
            "null",
            "http://localhost.evil.example",
            "http://10.0.0.1",
        ] {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
    }
}
