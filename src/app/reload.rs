//! Keeps a running [`App`] in step with its configuration: it reloads on SIGHUP and, unless the
//! config says `watch = false`, whenever something changes in the directories of the config
//! file, the plugin directory or a listed plugin. File events are debounced (a deploy writes
//! in several steps), reloads run one at a time, and after each one the watched directories
//! follow the new configuration. A rejected reload is logged and changes nothing.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::App;
use crate::config::Config;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    FileChange,
}

impl App {
    /// Starts reloading on SIGHUP and on file changes, for as long as the runtime runs.
    pub fn spawn_reloader(self: &Arc<Self>) {
        let (triggers, mut next) = mpsc::unbounded_channel();
        spawn_hangup_listener(triggers.clone());
        let mut watcher = self.config.watch.then(|| file_watcher(triggers)).flatten();
        let app = self.clone();
        tokio::spawn(async move {
            let mut watched = BTreeSet::new();
            if let Some(watcher) = &mut watcher {
                follow(watcher, &mut watched, &app.source.watched_dirs(&app.config));
            }
            while let Some(trigger) = next.recv().await {
                if trigger == Trigger::FileChange {
                    // Wait for the writes to settle.
                    while let Ok(more) = tokio::time::timeout(DEBOUNCE, next.recv()).await {
                        if more.is_none() {
                            return;
                        }
                    }
                }
                while next.try_recv().is_ok() {}
                let Some(config) = app.reload_logged(trigger).await else {
                    continue;
                };
                if let Some(watcher) = &mut watcher {
                    follow(watcher, &mut watched, &app.source.watched_dirs(&config));
                }
            }
        });
    }

    /// Reloads, logs the outcome, and returns the configuration now in force, if it changed.
    async fn reload_logged(&self, trigger: Trigger) -> Option<Config> {
        match self.reload_config().await {
            Ok((config, report)) => {
                if report.loaded.is_empty() && report.removed.is_empty() {
                    tracing::debug!(?trigger, "reload: no plugin changed");
                } else {
                    tracing::info!(
                        ?trigger,
                        loaded = ?report.loaded,
                        kept = ?report.kept,
                        removed = ?report.removed,
                        "reloaded plugins"
                    );
                }
                Some(config)
            }
            Err(e) => {
                tracing::error!(
                    ?trigger,
                    "reload rejected, the previous plugins keep serving: {e}"
                );
                None
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

/// A watcher that reports every change of a file (not mere reads) as a trigger.
fn file_watcher(triggers: mpsc::UnboundedSender<Trigger>) -> Option<RecommendedWatcher> {
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
            )
        {
            let _ = triggers.send(Trigger::FileChange);
        }
    });
    watcher
        .inspect_err(|e| tracing::warn!("cannot watch files; reload with SIGHUP instead: {e}"))
        .ok()
}

/// Makes the watcher watch exactly `dirs`.
fn follow(watcher: &mut RecommendedWatcher, watched: &mut BTreeSet<PathBuf>, dirs: &[PathBuf]) {
    let wanted: BTreeSet<PathBuf> = dirs.iter().cloned().collect();
    for gone in watched.difference(&wanted) {
        let _ = watcher.unwatch(gone);
    }
    watched.retain(|dir| wanted.contains(dir));
    for dir in wanted {
        if watched.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(dir);
            }
            Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch for changes: {e}"),
        }
    }
}
