//! `/v1/plugins`, `/v1/reload` and `/metrics`: the chain's plugins as loaded (contract, content
//! hash, grants, limits, policies, and what each did), a reload with SIGHUP's semantics whose
//! answer says what changed or why nothing did, and the Prometheus exposition.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Admin, failure};
use crate::interceptor::{FailurePolicy, PauseTimeoutPolicy};
use crate::wasm::PluginInfo;

pub(super) async fn list(State(admin): State<Arc<Admin>>) -> Json<Vec<serde_json::Value>> {
    let plugins = admin.app.plugins.plugins().await;
    Json(plugins.iter().map(view).collect())
}

fn view(plugin: &PluginInfo) -> serde_json::Value {
    let m = &plugin.metrics;
    let micros = |q| m.latency_quantile(q).map(|d| d.as_secs_f64() * 1e6);
    let limits = &plugin.limits;
    json!({
        "name": plugin.name,
        "path": plugin.path,
        "contract": plugin.contract,
        "hash": plugin.hash,
        "grants": plugin.grants.iter().map(|g| g.name()).collect::<Vec<_>>(),
        "limits": {
            "timeout_ms": limits.call_timeout.as_millis() as u64,
            "max_memory_bytes": limits.max_memory,
            "fuel": limits.fuel,
            "max_instances": limits.max_instances,
            "fresh_instances": limits.fresh_instances,
        },
        "on_error": match plugin.policy.on_error {
            FailurePolicy::Continue => "continue",
            FailurePolicy::Block => "block",
        },
        "mode": plugin.policy.mode,
        "on_timeout": plugin.policy.on_pause_timeout.map(|p| match p {
            PauseTimeoutPolicy::Continue => "approve",
            PauseTimeoutPolicy::Block => "deny",
        }),
        "metrics": {
            "calls": m.calls,
            "continued": m.continued,
            "modified": m.modified,
            "blocked": m.blocked,
            "mocked": m.mocked,
            "paused": m.paused,
            "delayed": m.delayed,
            "traps": m.traps,
            "timeouts": m.timeouts,
            "bad_actions": m.bad_actions,
            "unavailable": m.unavailable,
            "p50_us": micros(0.5),
            "p99_us": micros(0.99),
        },
    })
}

pub(super) async fn reload(State(admin): State<Arc<Admin>>) -> Response {
    match admin.reloader.reload().await {
        Ok(report) => Json(json!({
            "loaded": report.loaded,
            "kept": report.kept,
            "removed": report.removed,
        }))
        .into_response(),
        Err(e) => failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("reload refused, the previous plugins keep serving: {e}"),
        ),
    }
}

pub(super) async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let text = admin.app.pipeline.metrics.encode(admin.app.scrape().await);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
