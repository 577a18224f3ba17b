//! What lets reconciles trust the operator's caches instead of reading every object afresh,
//! and keeps those caches small:
//!
//! - [`OwnWrites`]: the resource version of the operator's latest write to each object. A
//!   cached copy at least that recent already shows the write, so the reconcile uses it; an
//!   older one (the watch has not delivered the write yet) is read again from the API server,
//!   so no hook runs twice because of a lagging cache.
//! - [`plug_trigger`]: a Plug reconcile is woken by changes to what the user controls
//!   (generation, deletion, labels, annotations), not by the operator's own status and
//!   finalizer writes.
//! - [`Throttle`]: a steady Socket's status (its list of coupled Plugs) is rewritten at most
//!   once per interval however many Plugs couple, instead of once per Plug.
//! - [`trim`]: `managedFields` are dropped from watched objects; nothing reads them.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::ObjectMeta;

use crate::crd::conditions::{self, types};
use crate::crd::{Plug, Socket};

/// Entries kept at most in the per-object maps; past this the oldest half is dropped (see
/// each map for what forgetting costs).
const MAX_ENTRIES: usize = 65536;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn version(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

/// How long after [`OwnWrites`] overflowed no cached copy is trusted: far longer than a watch
/// takes to deliver a write.
const DISTRUST_AFTER_OVERFLOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Versions {
    by_uid: HashMap<String, u64>,
    overflowed: Option<Instant>,
}

/// The resource version of the operator's latest write to each object, by UID. An entry goes
/// when a cached copy shows the write, or when the object goes.
#[derive(Debug, Default)]
pub(crate) struct OwnWrites {
    versions: Mutex<Versions>,
}

impl OwnWrites {
    /// Records the object as the API server returned it after one of our writes.
    pub(crate) fn record(&self, meta: &ObjectMeta) {
        let (Some(uid), Some(v)) = (meta.uid.clone(), version(meta)) else {
            return;
        };
        let mut versions = lock(&self.versions);
        if versions.by_uid.len() >= MAX_ENTRIES && !versions.by_uid.contains_key(&uid) {
            // Forgotten entries could let a stale copy through: trust no cache for a while.
            versions.by_uid.clear();
            versions.overflowed = Some(Instant::now());
        }
        let e = versions.by_uid.entry(uid).or_insert(0);
        *e = (*e).max(v);
    }

    /// Whether a cached copy shows every write we made to the object. A copy that does is
    /// trusted from then on (its entry is dropped); one whose version cannot be compared is
    /// not.
    pub(crate) fn is_current(&self, cached: &ObjectMeta) -> bool {
        let Some(uid) = cached.uid.as_deref() else {
            return false;
        };
        let mut versions = lock(&self.versions);
        if let Some(at) = versions.overflowed {
            if at.elapsed() < DISTRUST_AFTER_OVERFLOW {
                return false;
            }
            versions.overflowed = None;
        }
        match (versions.by_uid.get(uid).copied(), version(cached)) {
            (None, Some(_)) => true,
            (Some(written), Some(seen)) if seen >= written => {
                versions.by_uid.remove(uid);
                true
            }
            _ => false,
        }
    }

    /// Forgets an object that is gone.
    pub(crate) fn forget(&self, meta: &ObjectMeta) {
        if let Some(uid) = meta.uid.as_deref() {
            lock(&self.versions).by_uid.remove(uid);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.versions).by_uid.len()
    }
}

/// What wakes a Plug reconcile from a change to the Plug itself: its spec (generation), its
/// deletion, its labels and annotations. The operator's own status and finalizer writes change
/// none of them, so they wake nothing.
pub(crate) fn plug_trigger(plug: &Plug) -> Option<u64> {
    Some(user_changes(&plug.metadata))
}

/// What wakes a Socket reconcile from a change to the Socket itself: as for a Plug
/// ([`plug_trigger`]); the Plugs' changes wake it through their own watch.
pub(crate) fn socket_trigger(socket: &Socket) -> Option<u64> {
    Some(user_changes(&socket.metadata))
}

/// What wakes the Plugs of a namespace: its labels (admission) and its deletion.
pub(crate) fn namespace_trigger<K: kube::Resource>(ns: &K) -> Option<u64> {
    let mut h = DefaultHasher::new();
    ns.meta().labels.hash(&mut h);
    ns.meta().deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

fn user_changes(meta: &ObjectMeta) -> u64 {
    let mut h = DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.deletion_timestamp.is_some().hash(&mut h);
    // Labels and annotations are the user's too (a label change is how one asks for a look);
    // the operator writes only the force annotation's removal.
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    h.finish()
}

/// Drops what no reconcile reads from a watched object.
pub(crate) fn trim<K: kube::Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// When each Socket's steady-state reconcile last ran, by UID.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Mutex<HashMap<String, Instant>>,
}

impl Throttle {
    /// The delay before a reconcile of `socket` may run again, when it is in a steady state
    /// (its spec handled, not being deleted, created hooks done, Ready) and its last one ran
    /// less than `interval` ago. Such a reconcile can only refresh the list of coupled Plugs,
    /// which is not worth a status write per Plug.
    pub(crate) fn wait(&self, socket: &Socket, interval: Duration) -> Option<Duration> {
        let status = socket.status.as_ref()?;
        let steady = socket.metadata.deletion_timestamp.is_none()
            && status.created
            && status.observed_generation == socket.metadata.generation
            && conditions::find(&status.conditions, types::READY)
                .is_some_and(|c| c.status == "True");
        if !steady {
            return None;
        }
        let uid = socket.metadata.uid.as_deref()?;
        let since = lock(&self.last).get(uid)?.elapsed();
        interval.checked_sub(since).filter(|d| !d.is_zero())
    }

    /// Notes that a reconcile of `socket` ran now.
    pub(crate) fn ran(&self, socket: &Socket) {
        let Some(uid) = socket.metadata.uid.clone() else {
            return;
        };
        let mut map = lock(&self.last);
        if map.len() >= MAX_ENTRIES && !map.contains_key(&uid) {
            // Forgetting only lets a reconcile run sooner.
            map.clear();
        }
        map.insert(uid, Instant::now());
    }

    /// Forgets a Socket that is gone.
    pub(crate) fn forget(&self, socket: &Socket) {
        if let Some(uid) = socket.metadata.uid.as_deref() {
            lock(&self.last).remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::FORCE_DECOUPLE_ANNOTATION;

    fn meta(uid: &str, rv: &str) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_cache_older_than_our_write_is_not_trusted_until_it_catches_up() {
        let w = OwnWrites::default();
        assert!(w.is_current(&meta("a", "5")), "nothing written: trusted");
        w.record(&meta("a", "10"));
        assert!(!w.is_current(&meta("a", "9")));
        assert!(w.is_current(&meta("a", "10")));
        assert_eq!(w.len(), 0, "caught up: forgotten");
        w.record(&meta("b", "3"));
        assert!(!w.is_current(&meta("b", "not-a-number")));
        w.forget(&meta("b", "3"));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn only_user_changes_wake_a_plug() {
        let mut plug: Plug = serde_json::from_value(serde_json::json!({
            "apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug",
            "metadata": {"name": "app", "namespace": "team", "generation": 1},
            "spec": {"socket": {"name": "db"}},
        }))
        .unwrap();
        let before = plug_trigger(&plug);
        plug.status = Some(Default::default());
        plug.metadata.finalizers = Some(vec!["plugboard.dev/finalizer".into()]);
        plug.metadata.resource_version = Some("7".into());
        assert_eq!(plug_trigger(&plug), before, "our own writes wake nothing");
        plug.metadata.annotations =
            Some([(FORCE_DECOUPLE_ANNOTATION.to_owned(), "true".to_owned())].into());
        assert_ne!(plug_trigger(&plug), before);
        plug.metadata.annotations = None;
        plug.metadata.labels = Some([("poke".to_owned(), "1".to_owned())].into());
        assert_ne!(plug_trigger(&plug), before, "a label change is a poke");
        plug.metadata.labels = None;
        plug.metadata.generation = Some(2);
        assert_ne!(plug_trigger(&plug), before);
    }

    #[test]
    fn a_steady_socket_reconciles_at_most_once_per_interval() {
        let mut socket: Socket = serde_json::from_value(serde_json::json!({
            "apiVersion": "plugboard.dev/v1alpha1", "kind": "Socket",
            "metadata": {"name": "db", "namespace": "team", "uid": "s", "generation": 1},
            "spec": {},
            "status": {"created": true, "observedGeneration": 1, "conditions": [
                {"type": "Ready", "status": "True", "reason": "SocketReady", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap();
        let t = Throttle::default();
        let interval = Duration::from_secs(60);
        assert_eq!(t.wait(&socket, interval), None, "never ran: runs");
        t.ran(&socket);
        assert!(t.wait(&socket, interval).is_some());
        socket.metadata.generation = Some(2);
        assert_eq!(
            t.wait(&socket, interval),
            None,
            "a spec change runs at once"
        );
        socket.metadata.generation = Some(1);
        socket.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert_eq!(t.wait(&socket, interval), None, "a deletion runs at once");
        t.forget(&socket);
    }
}
