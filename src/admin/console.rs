//! The web console: three static files built into the binary, no front-end build step. The
//! page itself holds no secret; it asks for the admin token and sends it with every call.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::routing::get;

use super::Admin;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

pub(super) fn routes() -> Router<Arc<Admin>> {
    let file = |kind: &'static str, body: &'static str| {
        get(move || async move {
            (
                [
                    (header::CONTENT_TYPE, kind),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
        })
    };
    Router::new()
        .route("/", file("text/html; charset=utf-8", PAGE))
        .route(
            "/console.js",
            file("text/javascript; charset=utf-8", SCRIPT),
        )
        .route("/console.css", file("text/css; charset=utf-8", STYLE))
}
