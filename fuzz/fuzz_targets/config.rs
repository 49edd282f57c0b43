//! Config parsing: any text is a configuration or a clear error, and what a configuration
//! yields (HTTP bounds, session settings, scope rules, static tokens) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use membrane::auth::{Principal, ScopeRules, StaticTokens};
use membrane::config::Config;

fuzz_target!(|text: &str| {
    let _ = StaticTokens::parse(text);
    let Ok(config) = toml::from_str::<Config>(text) else {
        return;
    };
    let _ = config.front_options("127.0.0.1:8080".parse().unwrap());
    let _ = config.server_limits();
    let _ = config.session_config();
    let _ = config.drain_timeout();
    for plugin in &config.plugins {
        let _ = (
            plugin.name(),
            plugin.limits(),
            plugin.grants(),
            plugin.config_json(),
        );
    }
    if let Some(auth) = &config.auth {
        let rules = ScopeRules::new(&auth.required_scopes, &auth.scopes);
        let principal = Principal {
            subject: "fuzz".into(),
            issuer: None,
            scopes: auth.scopes_supported.iter().cloned().collect(),
            claims: Default::default(),
        };
        for method in ["tools/call", "initialize", "ping"] {
            let _ = rules.missing(&principal, method, Some("delete_all"));
        }
    }
});
