//! Assembling the interceptor chain from both kinds of interceptor behind the one
//! [`Interceptor`] trait: the native ones (Rust, in process, given by whoever embeds membrane)
//! first, then the Wasm plugins the registry loaded, in configured order. A plugin that is
//! another's canary joins that plugin's link, and `[record] after` sets where tapes copy
//! messages. Each assembled chain gets the next version.

use std::sync::Arc;

use crate::config::{Config, PluginConfig};
use crate::interceptor::{Interceptor, InterceptorChain, LinkPolicy};

/// An interceptor written in Rust, linked into the chain ahead of the plugins.
#[derive(Clone)]
pub struct NativeInterceptor {
    pub interceptor: Arc<dyn Interceptor>,
    pub policy: LinkPolicy,
}

/// The chain of `natives` and the plugins configured as `configs` and loaded as `plugins`
/// (the same order).
pub(super) fn assemble(
    config: &Config,
    natives: &[NativeInterceptor],
    configs: &[PluginConfig],
    plugins: &[Arc<dyn Interceptor>],
    version: u64,
) -> InterceptorChain {
    let mut chain = natives
        .iter()
        .fold(InterceptorChain::new(), |chain, native| {
            chain.with_policy(native.interceptor.clone(), native.policy)
        });
    let record_after = config.record.as_ref().and_then(|r| r.after.as_deref());
    let mut record_at = 0;
    let entries = configs.iter().zip(plugins);
    for (plugin_config, plugin) in entries.clone() {
        if plugin_config.canary_of.is_some() {
            continue;
        }
        let name = plugin_config.name();
        chain = chain.with_policy(plugin.clone(), plugin_config.policy());
        let canary = entries
            .clone()
            .find(|(candidate, _)| candidate.canary_of.as_deref() == Some(name.as_str()));
        if let Some((candidate_config, candidate)) = canary {
            chain = chain.with_canary(
                candidate.clone(),
                candidate_config.policy(),
                candidate_config.canary.unwrap_or(0.0),
            );
        }
        if record_after == Some(name.as_str()) {
            record_at = chain.len();
        }
    }
    chain.recording_at(record_at).versioned(version)
}
