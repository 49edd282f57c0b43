//! Keeps a running [`App`] in step with its configuration: it reloads on SIGHUP and, unless the
//! config says `watch = false`, when a file that matters changes: the config file, a listed
//! plugin, the listener's certificate or key, the token or key set file, or a `*.wasm` or
//! `*.toml` in the plugin directory. Nothing else in those directories counts, so membrane's
//! own writes beside its config (a log, a store, a cache) never trigger a reload. File events
//! are debounced (a deploy writes in several steps) but a reload still happens at least once a
//! second under continuous change; reloads run one at a time, and after each one the watch
//! follows the new configuration. A rejected reload is logged and changes nothing. The admin
//! API asks through a [`Reloader`] and hears the outcome; every outcome is announced.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot};

use super::App;
use crate::config::Config;
use crate::wasm::ReloadReport;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The longest a reload waits for quiet once a change is seen.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// What asked for a reload.
#[derive(Debug)]
enum Trigger {
    Signal,
    FileChange,
    /// The admin API, waiting for the outcome.
    Admin(oneshot::Sender<Result<ReloadReport, String>>),
}

/// A reload done or refused, as announced to [`App::subscribe_reloads`]rs.
#[derive(Debug, Clone)]
pub enum ReloadNotice {
    Done(ReloadReport),
    Refused(String),
}

/// Asks the running reloader for a reload, as SIGHUP does, and waits for its outcome.
#[derive(Debug, Clone)]
pub struct Reloader(mpsc::UnboundedSender<Trigger>);

impl Reloader {
    /// What the reload changed, or why it was refused (the previous plugins keep serving).
    pub async fn reload(&self) -> Result<ReloadReport, String> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || "membrane is shutting down".to_owned();
        self.0.send(Trigger::Admin(reply)).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// The paths whose change calls for a reload, absolute.
#[derive(Debug, Default, PartialEq, Eq)]
struct WatchSet {
    files: BTreeSet<PathBuf>,
    plugin_dir: Option<PathBuf>,
}

impl WatchSet {
    fn of(app: &App, config: &Config) -> Self {
        let (files, plugin_dir) = app.source.watched(config);
        Self {
            files: files.iter().map(|file| absolute(file)).collect(),
            plugin_dir: plugin_dir.map(|dir| absolute(&dir)),
        }
    }

    /// The directories to watch: those of the files (editors and deploy tools replace files by
    /// renaming, which only the directory sees), and the plugin directory.
    fn dirs(&self) -> BTreeSet<PathBuf> {
        let parents = self
            .files
            .iter()
            .filter_map(|file| file.parent().map(Path::to_owned));
        parents.chain(self.plugin_dir.clone()).collect()
    }

    fn matters(&self, path: &Path) -> bool {
        self.files.contains(path)
            || self.plugin_dir.as_deref().is_some_and(|dir| {
                path.parent() == Some(dir)
                    && path
                        .extension()
                        .is_some_and(|ext| ext == "wasm" || ext == "toml")
            })
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

impl App {
    /// Starts reloading on SIGHUP, on file changes and when the returned [`Reloader`] asks,
    /// for as long as the runtime runs.
    pub fn spawn_reloader(self: &Arc<Self>) -> Reloader {
        let (triggers, mut next) = mpsc::unbounded_channel();
        spawn_hangup_listener(triggers.clone());
        let watching = Arc::new(ArcSwap::from_pointee(WatchSet::of(self, &self.config)));
        let mut watcher = self
            .config
            .watch
            .then(|| file_watcher(triggers.clone(), watching.clone()))
            .flatten();
        let app = self.clone();
        tokio::spawn(async move {
            let mut watched = BTreeSet::new();
            if let Some(watcher) = &mut watcher {
                follow(watcher, &mut watched, &watching.load().dirs());
            }
            while let Some(trigger) = next.recv().await {
                let debounce = matches!(trigger, Trigger::FileChange);
                let cause = format!("{trigger:?}");
                let mut waiting = Vec::new();
                let mut wait_for = |trigger| {
                    if let Trigger::Admin(reply) = trigger {
                        waiting.push(reply);
                    }
                };
                wait_for(trigger);
                if debounce {
                    // Wait for the writes to settle, but not for ever.
                    let deadline = tokio::time::Instant::now() + MAX_DEBOUNCE;
                    loop {
                        let quiet = (tokio::time::Instant::now() + DEBOUNCE).min(deadline);
                        match tokio::time::timeout_at(quiet, next.recv()).await {
                            Ok(Some(trigger)) => wait_for(trigger),
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
                }
                while let Ok(trigger) = next.try_recv() {
                    wait_for(trigger);
                }
                app.reload_credentials().await;
                let outcome = app.reload_logged(&cause).await;
                for reply in waiting {
                    let _ = reply.send(
                        outcome
                            .as_ref()
                            .map(|(_, r)| r.clone())
                            .map_err(Clone::clone),
                    );
                }
                let Ok((config, _)) = outcome else { continue };
                if let Some(watcher) = &mut watcher {
                    let set = WatchSet::of(&app, &config);
                    follow(watcher, &mut watched, &set.dirs());
                    watching.store(Arc::new(set));
                }
            }
        });
        Reloader(triggers)
    }

    /// Reloads, logs and announces the outcome; returns the configuration now in force.
    async fn reload_logged(&self, cause: &str) -> Result<(Config, ReloadReport), String> {
        match self.reload_config().await {
            Ok((config, report)) => {
                if report.loaded.is_empty() && report.removed.is_empty() {
                    tracing::debug!(cause, "reload: no plugin changed");
                } else {
                    tracing::info!(
                        cause,
                        loaded = ?report.loaded,
                        kept = ?report.kept,
                        removed = ?report.removed,
                        "reloaded plugins"
                    );
                }
                self.announce(ReloadNotice::Done(report.clone()));
                Ok((config, report))
            }
            Err(e) => {
                tracing::error!(
                    cause,
                    "reload rejected, the previous plugins keep serving: {e}"
                );
                self.announce(ReloadNotice::Refused(e.to_string()));
                Err(e.to_string())
            }
        }
    }
}

fn spawn_hangup_listener(triggers: mpsc::UnboundedSender<Trigger>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload by changing the files instead");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if triggers.send(Trigger::Signal).is_err() {
                return;
            }
        }
    });
}

/// A watcher that reports every change (not mere reads) of a path that matters as a trigger.
fn file_watcher(
    triggers: mpsc::UnboundedSender<Trigger>,
    watching: Arc<ArcSwap<WatchSet>>,
) -> Option<RecommendedWatcher> {
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let change = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        );
        let set = watching.load();
        if change && event.paths.iter().any(|path| set.matters(path)) {
            let _ = triggers.send(Trigger::FileChange);
        }
    });
    watcher
        .inspect_err(|e| tracing::warn!("cannot watch files; reload with SIGHUP instead: {e}"))
        .ok()
}

/// Makes the watcher watch exactly `dirs`.
fn follow(
    watcher: &mut RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    dirs: &BTreeSet<PathBuf>,
) {
    for gone in watched.difference(dirs) {
        let _ = watcher.unwatch(gone);
    }
    watched.retain(|dir| dirs.contains(dir));
    for dir in dirs {
        if watched.contains(dir) {
            continue;
        }
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(dir.clone());
            }
            Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch for changes: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_configuration_names_matters() {
        let set = WatchSet {
            files: BTreeSet::from([
                PathBuf::from("/etc/m/membrane.toml"),
                PathBuf::from("/opt/p/guard.wasm"),
            ]),
            plugin_dir: Some(PathBuf::from("/etc/m/policies")),
        };
        assert!(set.matters(Path::new("/etc/m/membrane.toml")));
        assert!(set.matters(Path::new("/opt/p/guard.wasm")));
        assert!(set.matters(Path::new("/etc/m/policies/new.wasm")));
        assert!(set.matters(Path::new("/etc/m/policies/new.toml")));
        for path in [
            "/etc/m/membrane.log",
            "/etc/m/sessions.sqlite-wal",
            "/etc/m/policies/notes.txt",
            "/etc/m/policies/sub/x.wasm",
            "/opt/p/other.wasm",
        ] {
            assert!(!set.matters(Path::new(path)), "{path}");
        }
        assert_eq!(
            set.dirs(),
            BTreeSet::from([
                PathBuf::from("/etc/m"),
                PathBuf::from("/etc/m/policies"),
                PathBuf::from("/opt/p")
            ])
        );
    }
}
