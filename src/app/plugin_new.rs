//! `membrane plugin new --lang rust|python|js NAME`: a new plugin from a template, built and
//! tested. The templates (`plugins/templates/`, built into the binary) hold a small policy
//! that refuses `tools/call` of configured tools, kept apart from the bindings so that its
//! sample test runs natively, and a copy of the contract; a Rust plugin gets a copy of the
//! Rust SDK (`plugins/sdk`) too. The new directory is written, the
//! component built with the language's toolchain (cargo; componentize-py; componentize-js)
//! and the sample test run; a step that fails says which and why.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The languages there are templates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// The contract, as this membrane implements it.
const WIT: &str = include_str!("../../wit/interceptor.wit");

const RUST: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../plugins/templates/rust/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../plugins/templates/rust/src/lib.rs"),
    ),
    (
        "src/policy.rs",
        include_str!("../../plugins/templates/rust/src/policy.rs"),
    ),
    // The SDK, as this membrane ships it (its contract is written beside it).
    (
        "membrane-plugin/Cargo.toml",
        include_str!("../../plugins/sdk/Cargo.toml"),
    ),
    (
        "membrane-plugin/src/lib.rs",
        include_str!("../../plugins/sdk/src/lib.rs"),
    ),
    (
        "membrane-plugin/src/message.rs",
        include_str!("../../plugins/sdk/src/message.rs"),
    ),
    (
        "membrane-plugin/src/host.rs",
        include_str!("../../plugins/sdk/src/host.rs"),
    ),
    (
        "membrane-plugin/src/testing.rs",
        include_str!("../../plugins/sdk/src/testing.rs"),
    ),
];
const PYTHON: &[(&str, &str)] = &[
    (
        "app.py",
        include_str!("../../plugins/templates/python/app.py"),
    ),
    (
        "policy.py",
        include_str!("../../plugins/templates/python/policy.py"),
    ),
    (
        "test_policy.py",
        include_str!("../../plugins/templates/python/test_policy.py"),
    ),
];
const JS: &[(&str, &str)] = &[
    (
        "plugin.js",
        include_str!("../../plugins/templates/js/plugin.js"),
    ),
    (
        "policy.js",
        include_str!("../../plugins/templates/js/policy.js"),
    ),
    (
        "policy.test.mjs",
        include_str!("../../plugins/templates/js/policy.test.mjs"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error(
        "a plugin name is lowercase letters, digits and dashes, starting with a letter: not {0:?}"
    )]
    Name(String),
    #[error("{0} exists already: choose another name or directory")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{step} failed: {reason}")]
    Step { step: String, reason: String },
}

/// Writes the plugin `name` in `lang` into `parent/name`, builds it and runs its sample test;
/// returns the built component.
pub fn create(lang: Lang, name: &str, parent: &Path) -> Result<PathBuf, NewError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(NewError::Name(name.to_owned()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(NewError::Exists(dir));
    }
    let snake = name.replace('-', "_");
    let files = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    let files = files
        .iter()
        .map(|(path, text)| {
            (
                *path,
                text.replace("{{name_}}", &snake).replace("{{name}}", name),
            )
        })
        .chain([("wit/interceptor.wit", WIT.to_owned())])
        .chain(
            (lang == Lang::Rust).then(|| ("membrane-plugin/wit/interceptor.wit", WIT.to_owned())),
        );
    for (path, text) in files {
        let path = dir.join(path);
        let written = std::fs::create_dir_all(path.parent().expect("a file in the directory"))
            .and_then(|()| std::fs::write(&path, text));
        written.map_err(|source| NewError::Write { path, source })?;
    }
    // The steps run in the plugin's directory.
    let output = format!("{snake}.wasm");
    let wasm = dir.join(&output);
    match lang {
        Lang::Rust => {
            run(
                &dir,
                "cargo",
                &["build", "--release", "--target", "wasm32-wasip2"],
            )?;
            let built = dir.join(format!("target/wasm32-wasip2/release/{snake}.wasm"));
            std::fs::copy(&built, &wasm).map_err(|source| NewError::Write {
                path: wasm.clone(),
                source,
            })?;
            run(&dir, "cargo", &["test", "--quiet"])?;
        }
        Lang::Python => {
            let tool = tool("MEMBRANE_COMPONENTIZE_PY", "componentize-py");
            let args = [
                "--wit-path",
                "wit",
                "--world",
                "interceptor",
                "componentize",
                "app",
            ];
            let args: Vec<&str> = args
                .into_iter()
                .chain(["-p", ".", "--output", &output])
                .collect();
            run(&dir, &tool, &args)?;
            run(&dir, "python3", &["-m", "unittest", "--quiet"])?;
        }
        Lang::Js => {
            let tool = tool("MEMBRANE_COMPONENTIZE_JS", "componentize-js");
            let args = ["plugin.js", "--wit", "wit", "--world-name", "interceptor"];
            let disable = ["--disable", "http", "fetch-event", "-o", &output];
            let args: Vec<&str> = args.into_iter().chain(disable).collect();
            run(&dir, &tool, &args)?;
            run(&dir, "node", &["--test"])?;
        }
    }
    Ok(wasm)
}

/// A toolchain command: the one an environment variable names, else the one on PATH.
fn tool(variable: &str, command: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| command.to_owned())
}

/// Runs a step in `dir`, its output on stderr (stdout says only what was built); a failure
/// says what to do.
fn run(dir: &Path, program: &str, args: &[&str]) -> Result<(), NewError> {
    let step = format!("`{program} {}`", args.join(" "));
    eprintln!("membrane plugin new: {step}");
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(std::io::stderr())
        .status();
    let hint = match program {
        "cargo" => "rustup target add wasm32-wasip2",
        p if p.contains("componentize-py") => {
            "pip install componentize-py==0.25.1, or set MEMBRANE_COMPONENTIZE_PY"
        }
        p if p.contains("componentize-js") => {
            "npm install @bytecodealliance/componentize-js@0.23.0 @bytecodealliance/jco@1.35.0 @bytecodealliance/preview2-shim@0.25.0, and put its .bin on PATH or set MEMBRANE_COMPONENTIZE_JS"
        }
        _ => "install it",
    };
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(NewError::Step {
            step,
            reason: format!("it exited with {status} (its output is above)"),
        }),
        Err(e) => Err(NewError::Step {
            step,
            reason: format!("cannot run {program}: {e} ({hint})"),
        }),
    }
}
