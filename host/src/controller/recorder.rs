//! Events, published as kube-runtime's `Recorder` publishes them, with a cache that stays small.
//!
//! Like kube-runtime's recorder, a repeat of an Event (same type, action, reason, object and
//! related object) within [`SERIES_WINDOW`] of the last occurrence is folded into the Event
//! first published, as a series with a count, instead of creating another Event. To know what
//! was published, kube-runtime's recorder keeps a full copy of every Event (its object
//! reference, note, metadata; about 1.5 KiB each, in a map that never shrinks) and drops the old
//! ones only when another Event is published. With a few Events per coupling that was the
//! largest thing the operator kept after its objects were deleted. This recorder keeps, per
//! Event, only what a repeat needs: a digest of its key, its name and namespace, its count and
//! when it was last seen; it forgets entries past the window (on publishing, and on
//! [`EventRecorder::expire`], which the operator calls periodically), and gives the map's
//! memory back once most of it is empty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use sha2::{Digest as _, Sha256};

/// How long after its last occurrence a repeat still folds into an Event (kube-runtime's).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// How often publishing looks for expired entries.
const EXPIRE_EVERY: SignedDuration = SignedDuration::from_secs(30);

/// The identity of an Event for folding repeats: a digest of type, action, reason and both
/// object references.
type Key = [u8; 16];

/// What is kept of a published Event.
#[derive(Debug, Clone)]
struct Published {
    namespace: String,
    name: String,
    count: i32,
    last: Timestamp,
}

#[derive(Debug, Default)]
struct Cache {
    events: HashMap<Key, Published>,
    expired_at: Option<Timestamp>,
}

impl Cache {
    fn expire(&mut self, now: Timestamp) {
        self.events.retain(|_, p| p.last + SERIES_WINDOW > now);
        // A map that held many Events keeps its table after they go: give it back.
        if self.events.capacity() > 64 && self.events.len() * 4 < self.events.capacity() {
            self.events.shrink_to_fit();
        }
        self.expired_at = Some(now);
    }
}

/// Publishes Events for the operator's objects (see the module docs).
#[derive(Clone)]
pub(crate) struct EventRecorder {
    client: kube::Client,
    reporter: Reporter,
    cache: Arc<Mutex<Cache>>,
    /// How many Normal Events each object may still get (see `spam`); Warnings always go out.
    filter: Arc<Mutex<super::spam::SpamFilter>>,
}

/// What [`EventRecorder::publish`] sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// A new Event object.
    Created,
    /// The next occurrence of an Event published within the window (a series patch).
    Repeated,
    /// Nothing: a Normal Event about an object that already had its share.
    Suppressed,
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

fn key(ev: &Event, regarding: &ObjectReference) -> Key {
    let mut h = Sha256::new();
    let mut field = |s: Option<&str>| {
        // Length-prefixed, so no two different keys write the same bytes.
        match s {
            Some(s) => {
                h.update((s.len() as u64 + 1).to_le_bytes());
                h.update(s.as_bytes());
            }
            None => h.update(0u64.to_le_bytes()),
        }
    };
    field(Some(match ev.type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }));
    field(Some(&ev.action));
    field(Some(&ev.reason));
    for reference in [Some(regarding), ev.secondary.as_ref()] {
        match reference {
            Some(r) => {
                field(Some("ref"));
                for part in [
                    &r.api_version,
                    &r.kind,
                    &r.namespace,
                    &r.name,
                    &r.uid,
                    &r.resource_version,
                    &r.field_path,
                ] {
                    field(part.as_deref());
                }
            }
            None => field(None),
        }
    }
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

impl EventRecorder {
    pub(crate) fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            cache: Arc::default(),
            filter: Arc::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets Events whose series can no longer grow.
    pub(crate) fn expire(&self) {
        self.cache().expire(Timestamp::now());
    }

    /// Publishes `ev` about `regarding`: a new Event, or the next occurrence of the same one
    /// published within the window; a Normal Event only while its object has tokens left.
    pub(crate) async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<Sent, kube::Error> {
        if ev.type_ == EventType::Normal
            && !self
                .filter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .allow(&super::spam::key(regarding), std::time::Instant::now())
        {
            return Ok(Sent::Suppressed);
        }
        let now = Timestamp::now();
        let key = key(ev, regarding);
        let repeat = {
            let mut cache = self.cache();
            if cache.expired_at.is_none_or(|at| at + EXPIRE_EVERY <= now) {
                cache.expire(now);
            }
            cache
                .events
                .get(&key)
                .filter(|p| p.last + SERIES_WINDOW > now)
                .cloned()
        };
        let (published, sent) = match repeat {
            Some(p) => match self.add_occurrence(&p, now).await {
                Ok(()) => (
                    Published {
                        count: p.count.saturating_add(1),
                        last: now,
                        ..p
                    },
                    Sent::Repeated,
                ),
                // The Event is gone (expired on the API server, or deleted): start a new one.
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    (self.create(ev, regarding, now).await?, Sent::Created)
                }
                Err(error) => return Err(error),
            },
            None => (self.create(ev, regarding, now).await?, Sent::Created),
        };
        self.cache().events.insert(key, published);
        Ok(sent)
    }

    async fn add_occurrence(&self, p: &Published, now: Timestamp) -> Result<(), kube::Error> {
        let patch = serde_json::json!({
            "series": {
                "count": p.count.saturating_add(1),
                "lastObservedTime": MicroTime(now),
            }
        });
        Api::<K8sEvent>::namespaced(self.client.clone(), &p.namespace)
            .patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
    }

    async fn create(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<Published, kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = format!(
            "{}.{:x}",
            regarding
                .name
                .as_deref()
                .unwrap_or(&self.reporter.controller),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            related: ev.secondary.clone(),
            ..Default::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        Ok(Published {
            namespace,
            name,
            count: 1,
            last: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.to_owned(),
            note: Some(note.to_owned()),
            action: "Reconcile".to_owned(),
            secondary: None,
        }
    }

    fn reference(name: &str, rv: Option<&str>) -> ObjectReference {
        ObjectReference {
            api_version: Some("plugboard.dev/v1alpha1".into()),
            kind: Some("Plug".into()),
            namespace: Some("team".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            resource_version: rv.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn repeats_share_a_key_whatever_their_note() {
        let a = reference("a", None);
        assert_eq!(
            key(&event("Coupled", "one"), &a),
            key(&event("Coupled", "two"), &a)
        );
        assert_ne!(
            key(&event("Coupled", "x"), &a),
            key(&event("Decoupled", "x"), &a)
        );
        assert_ne!(
            key(&event("Coupled", "x"), &a),
            key(&event("Coupled", "x"), &reference("b", None))
        );
        assert_ne!(
            key(&event("Coupled", "x"), &reference("a", Some("1"))),
            key(&event("Coupled", "x"), &reference("a", Some("2"))),
            "a warning names the object's version: each version is an Event of its own"
        );
        let mut warning = event("Coupled", "x");
        warning.type_ = EventType::Warning;
        assert_ne!(key(&warning, &a), key(&event("Coupled", "x"), &a));
    }

    #[test]
    fn expired_entries_go_and_their_table_is_given_back() {
        let mut cache = Cache::default();
        let t0 = Timestamp::now();
        for i in 0u32..4096 {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&i.to_le_bytes());
            cache.events.insert(
                k,
                Published {
                    namespace: "team".into(),
                    name: format!("e{i}"),
                    count: 1,
                    last: if i < 8 { t0 + SERIES_WINDOW } else { t0 },
                },
            );
        }
        let full = cache.events.capacity();
        cache.expire(t0 + SignedDuration::from_mins(1));
        assert_eq!(cache.events.len(), 4096, "within the window: kept");
        cache.expire(t0 + SERIES_WINDOW + SignedDuration::from_secs(1));
        assert_eq!(cache.events.len(), 8);
        assert!(cache.events.capacity() < full / 16, "{full}");
    }
}
