//! `membrane plugin new`, as a new plugin author runs it, in each language from a clean
//! directory: it writes the plugin, builds it and runs its sample test; the component it
//! built then loads and refuses a configured tool (`membrane plugin check`). An existing
//! directory and a bad name are refused.

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::process::Output;

use common::{WAIT, membrane, peers};
use serde_json::Value;
use tokio::process::Command;

/// PATH with the pinned toolchains in front: componentize-py and componentize-js.
fn toolchains() -> OsString {
    let mut path = OsString::from(peers().join("venv/bin"));
    path.push(":");
    path.push(peers().join("npm/node_modules/.bin"));
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    path
}

async fn new_plugin(dir: &Path, lang: &str, name: &str) -> Output {
    let command = Command::new(membrane())
        .args(["plugin", "new", "--lang", lang, name, "--dir"])
        .arg(dir)
        .env("PATH", toolchains())
        // The Rust template builds in a target directory of its own.
        .env_remove("CARGO_TARGET_DIR")
        .output();
    tokio::time::timeout(WAIT * 15, command)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_new_plugin_in_each_language_builds_passes_its_test_and_loads() {
    for (lang, name) in [
        ("rust", "rust-guard"),
        ("python", "py-guard"),
        ("js", "js-guard"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let made = new_plugin(dir.path(), lang, name).await;
        let stderr = String::from_utf8_lossy(&made.stderr);
        assert!(made.status.success(), "{lang}: {stderr}");
        assert!(stderr.contains("sample test passed"), "{lang}: {stderr}");
        let wasm = dir
            .path()
            .join(name)
            .join(format!("{}.wasm", name.replace('-', "_")));
        assert_eq!(
            String::from_utf8_lossy(&made.stdout).trim(),
            wasm.display().to_string()
        );

        let config = dir.path().join("membrane.toml");
        let toml = format!(
            "[[plugins]]\npath = {:?}\n[plugins.config]\ndeny = [\"echo\"]\n",
            wasm.display().to_string()
        );
        std::fs::write(&config, toml).unwrap();
        let checked = Command::new(membrane())
            .args(["plugin", "check", "--json"])
            .arg(&wasm)
            .arg("--config")
            .arg(&config)
            .env("MEMBRANE_LOG", "warn")
            .output()
            .await
            .unwrap();
        let report: Value = serde_json::from_slice(&checked.stdout).unwrap();
        assert!(checked.status.success(), "{lang}: {report:#}");
        let call = report["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["message"] == "tools/call of echo")
            .unwrap();
        assert_eq!(call["verdict"], "block", "{lang}: {report:#}");
        assert_eq!(call["detail"], "tool 'echo' is not allowed here");

        if lang == "js" {
            let again = new_plugin(dir.path(), lang, name).await;
            assert!(!again.status.success());
            assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
            let bad = new_plugin(dir.path(), lang, "Bad_Name").await;
            assert!(String::from_utf8_lossy(&bad.stderr).contains("lowercase letters"));
        }
    }
}
