//! When each Plug of a scenario first reported `Ready`, and which are gone, from one watch.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube::Api;
use kube::runtime::watcher;
use plugboard::crd::Plug;
use plugboard_tests::scenario::{TEST_LABEL, plug_condition};

#[derive(Default)]
struct Seen {
    ready: HashMap<String, Instant>,
    deleted: HashSet<String>,
}

/// A watch of one scenario's Plugs.
pub struct PlugWatch {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl PlugWatch {
    /// Starts watching the Plugs labelled for run `run` in namespace `ns`, and returns once the
    /// watch has listed them (so nothing created afterwards is missed).
    pub async fn start(api: Api<Plug>, run: &str) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(tokio::sync::Notify::new());
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let config = watcher::Config::default().labels(&format!("{TEST_LABEL}={run}"));
        let task = tokio::spawn({
            let seen = seen.clone();
            let changed = changed.clone();
            async move {
                let mut listed = Some(listed_tx);
                let mut events = std::pin::pin!(watcher(api, config));
                while let Some(event) = events.next().await {
                    let now = Instant::now();
                    let mut s = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    match event {
                        Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                            let name = p.metadata.name.clone().unwrap_or_default();
                            let ready =
                                plug_condition(&p, "Ready").is_some_and(|c| c.status == "True");
                            if ready {
                                s.ready.entry(name).or_insert(now);
                            }
                        }
                        Ok(watcher::Event::Delete(p)) => {
                            s.deleted
                                .insert(p.metadata.name.clone().unwrap_or_default());
                        }
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = listed.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(watcher::Event::Init) => {}
                        Err(error) => eprintln!("bench: Plug watch error: {error}"),
                    }
                    drop(s);
                    changed.notify_waiters();
                }
            }
        });
        let _ = listed_rx.await;
        Self {
            seen,
            changed,
            task,
        }
    }

    /// When `name` first reported Ready.
    pub fn ready_at(&self, name: &str) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ready
            .get(name)
            .copied()
    }

    /// Waits until `done` holds for what the watch has seen, or `deadline` passes (`false`).
    async fn until(&self, deadline: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let end = Instant::now() + deadline;
        loop {
            let notified = self.changed.notified();
            if done(&self.seen.lock().unwrap_or_else(PoisonError::into_inner)) {
                return true;
            }
            if tokio::time::timeout_at(end.into(), notified).await.is_err() {
                return false;
            }
        }
    }

    /// Waits until `name` is Ready; when it became so.
    pub async fn wait_ready(&self, name: &str, deadline: Duration) -> Option<Instant> {
        self.until(deadline, |s| s.ready.contains_key(name)).await;
        self.ready_at(name)
    }

    /// Waits until `n` Plugs are Ready; when the last did.
    pub async fn wait_ready_count(&self, n: usize, deadline: Duration) -> Option<Instant> {
        if !self.until(deadline, |s| s.ready.len() >= n).await {
            return None;
        }
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ready
            .values()
            .max()
            .copied()
    }

    /// How many Plugs are Ready.
    pub fn ready_count(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ready
            .len()
    }

    /// Waits until `n` Plugs are gone.
    pub async fn wait_deleted_count(&self, n: usize, deadline: Duration) -> bool {
        self.until(deadline, |s| s.deleted.len() >= n).await
    }
}

impl Drop for PlugWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
