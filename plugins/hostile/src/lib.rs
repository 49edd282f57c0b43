//! `hostile`: a DELIBERATELY BROKEN membrane interceptor, used only by membrane's tests to
//! prove that a misbehaving plugin is isolated (time-limited, memory-limited, its traps and
//! bad output contained). Never load it in a real deployment.
//!
//! Configuration (unknown fields are refused):
//!
//! ```toml
//! mode = "loop"            # required: loop | sleep | trap | alloc | garbage | slow-init | fail-init
//! methods = ["tools/call"] # optional method globs to be called for (client-to-server requests)
//! tool = "x"               # optional: misbehave only when `params.name` is this, else continue
//! ```
//!
//! On a matching message, `loop` spins forever, `sleep` waits an hour on a WASI timer (a host
//! call, where epoch interruption cannot reach it), `trap` panics (a trap), `alloc` allocates and
//! fills 1 MiB blocks until memory runs out, and `garbage` answers `modify` with text that is
//! not JSON. `fail-init` makes `init` fail; `slow-init` makes `init` spin forever.

use serde::Deserialize;
use serde_json::Value;

/// How the plugin misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Loop,
    Sleep,
    Trap,
    Alloc,
    Garbage,
    SlowInit,
    FailInit,
}

/// The parsed configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mode: Mode,
    #[serde(default = "tools_call")]
    pub methods: Vec<String>,
    #[serde(default)]
    pub tool: Option<String>,
}

fn tools_call() -> Vec<String> {
    vec!["tools/call".to_owned()]
}

impl Config {
    pub fn from_json(config: &str) -> Result<Self, String> {
        serde_json::from_str(config).map_err(|e| format!("invalid hostile config: {e}"))
    }

    /// Whether to misbehave on this message (JSON text): always, unless `tool` is set and
    /// `params.name` is something else.
    pub fn targets(&self, json: &str) -> bool {
        let Some(tool) = &self.tool else {
            return true;
        };
        serde_json::from_str::<Value>(json)
            .is_ok_and(|message| message["params"]["name"].as_str() == Some(tool.as_str()))
    }
}

/// Spins forever; `black_box` keeps the optimizer from removing the loop.
pub fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = core::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates and fills 1 MiB blocks forever, until the allocator fails (which aborts).
pub fn hog() -> ! {
    const MIB: usize = 1 << 20;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let fill = (blocks.len() as u8) | 1;
        blocks.push(vec![fill; MIB]);
        core::hint::black_box(&blocks);
    }
}

#[cfg(target_arch = "wasm32")]
mod plugin {
    use std::sync::OnceLock;

    use crate::{Config, Mode};

    // Built against the frozen 0.1.0 contract: the tests also prove that plugins written for
    // an older release of the contract still load.
    wit_bindgen::generate!({ path: "../../wit/released/0.1.0", world: "interceptor" });

    use membrane::interceptor::host::{Level, log};
    use membrane::interceptor::types::{Direction, MessageKind};

    static CONFIG: OnceLock<Config> = OnceLock::new();

    struct Hostile;

    impl Guest for Hostile {
        fn init(config: String) -> Result<Vec<Filter>, String> {
            let config = Config::from_json(&config)?;
            match config.mode {
                Mode::FailInit => return Err("hostile: refusing to start".to_owned()),
                Mode::SlowInit => crate::spin(),
                _ => {}
            }
            let filters = vec![Filter {
                methods: config.methods.clone(),
                directions: vec![Direction::ClientToServer],
                kinds: vec![MessageKind::Request],
            }];
            CONFIG
                .set(config)
                .map_err(|_| "hostile: init called twice".to_owned())?;
            Ok(filters)
        }

        fn intercept(message: Message) -> Action {
            let Some(config) = CONFIG.get() else {
                return Action::Continue;
            };
            if !config.targets(&message.json) {
                return Action::Continue;
            }
            log(
                Level::Warn,
                &format!("hostile: {:?} on frame {}", config.mode, message.frame_id),
            );
            match config.mode {
                Mode::Loop => crate::spin(),
                Mode::Sleep => {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                    Action::Continue
                }
                Mode::Trap => panic!("hostile: trapping on purpose"),
                Mode::Alloc => crate::hog(),
                Mode::Garbage => Action::Modify("this is not json".to_owned()),
                Mode::SlowInit | Mode::FailInit => Action::Continue,
            }
        }
    }

    export!(Hostile);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes_defaults_and_errors() {
        let config = Config::from_json(r#"{"mode": "slow-init"}"#).unwrap();
        assert_eq!(config.mode, Mode::SlowInit);
        assert_eq!(config.methods, ["tools/call"]);
        assert!(config.tool.is_none());
        let unknown = Config::from_json(r#"{"mode": "explode"}"#).unwrap_err();
        assert!(unknown.contains("unknown variant `explode`"), "{unknown}");
        assert!(Config::from_json("{}").is_err());
        assert!(Config::from_json(r#"{"mode": "loop", "tools": "x"}"#).is_err());
    }

    #[test]
    fn tool_narrows_the_target() {
        let call = |name: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#
            )
        };
        let any = Config::from_json(r#"{"mode": "trap"}"#).unwrap();
        assert!(any.targets(&call("echo")));
        let only_x = Config::from_json(r#"{"mode": "trap", "tool": "x"}"#).unwrap();
        assert!(only_x.targets(&call("x")));
        assert!(!only_x.targets(&call("echo")));
        assert!(!only_x.targets("not json"));
    }
}
