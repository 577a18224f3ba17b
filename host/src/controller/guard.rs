//! Watches that survive malformed objects.
//!
//! A watch of `Plug`s decodes every object of the kind; with plain types, one object the Rust
//! types cannot read (written before a schema change, or a value the API server's schema
//! admits but the type does not — `spec.apparatus.idleTimeout: 5000000000` for a `u32`) fails
//! the whole list, and the kind's watch retries forever: nothing of that kind reconciles. Here
//! each object is decoded on its own (kube's [`DeserializeGuard`]); one that does not decode is
//! logged and gets a Warning Event (`InvalidObject`), and is left out of the watch, so every
//! other object keeps reconciling. (A later valid version is picked up as usual; its deletion
//! is passed on as a deletion.)
//!
//! Every watch the operator opens also recovers quickly from an API server restart: it asks the
//! server to end it after [`WATCH_TIMEOUT_SECS`] (kube-runtime then treats a watch that stays
//! silent 5 s longer as dead), so a watch opened while the API server was starting, which may
//! never deliver an event, is replaced within about half a minute instead of the default
//! 290 s; and a failed watch is re-opened after [`WatchBackoff`] (0.5 s doubling to 10 s, with
//! jitter) rather than kube-runtime's default of up to 30 s.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// The Event reason of an object that cannot be read.
pub(crate) const INVALID_OBJECT: &str = "InvalidObject";

/// How long the API server keeps one watch request open, in seconds. Re-opening a watch from
/// its last resource version is cheap (bookmarks keep the version fresh), and a silent watch
/// lasts at most this plus kube-runtime's 5 s margin.
pub(crate) const WATCH_TIMEOUT_SECS: u32 = 30;
/// The first pause before re-opening a failed watch.
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest pause before re-opening a failed watch.
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A watch that has not failed for this long starts its backoff over.
const WATCH_BACKOFF_RESET: Duration = Duration::from_secs(60);

/// The configuration of every watch: `base` with the operator's watch timeout.
pub(crate) fn watch_config(base: watcher::Config) -> watcher::Config {
    base.timeout(WATCH_TIMEOUT_SECS)
}

/// The pause before re-opening a failed watch: [`WATCH_BACKOFF_MIN`] doubling per consecutive
/// failure up to [`WATCH_BACKOFF_MAX`], each between half and all of that (jitter, so many
/// watches do not return at once), starting over after a success or [`WATCH_BACKOFF_RESET`]
/// without failures.
#[derive(Debug, Default)]
pub(crate) struct WatchBackoff {
    failures: u32,
    last: Option<Instant>,
}

impl WatchBackoff {
    fn delay(&mut self, now: Instant, fraction: f64) -> Duration {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) > WATCH_BACKOFF_RESET)
        {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last = Some(now);
        super::fairness::backoff(
            self.failures,
            WATCH_BACKOFF_MIN,
            WATCH_BACKOFF_MAX,
            fraction,
        )
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.delay(Instant::now(), super::fairness::random_fraction()))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A watch of `K` in which objects that do not decode are reported and left out.
/// `placeholder` makes a stand-in with an invalid object's metadata, to pass its deletion on.
pub(crate) fn watch<K>(
    api: Api<DeserializeGuard<K>>,
    config: watcher::Config,
    recorder: Recorder,
    placeholder: fn(ObjectMeta) -> Option<K>,
) -> futures::stream::BoxStream<'static, Result<WatchEvent<K>, watcher::Error>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use kube::runtime::WatchStreamExt as _;
    kube::runtime::watcher(api, watch_config(config))
        .backoff(WatchBackoff::default())
        .filter_map(move |event| {
            let recorder = recorder.clone();
            async move {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => return Some(Err(error)),
                };
                let (valid, invalid) = split(event, placeholder);
                if let Some(invalid) = invalid {
                    // Boxed: the stream keeps this future inline between polls.
                    Box::pin(report::<K>(&recorder, invalid)).await;
                }
                valid.map(Ok)
            }
        })
        // Nothing reads managed fields: keep them out of the caches.
        .modify(super::cache::trim::<K>)
        // On the heap as well: the controllers hold their trigger streams inline.
        .boxed()
}

/// The event with only valid objects, and the invalid object it held, if any.
fn split<K: Resource>(
    event: WatchEvent<DeserializeGuard<K>>,
    placeholder: fn(ObjectMeta) -> Option<K>,
) -> (
    Option<WatchEvent<K>>,
    Option<kube::core::error_boundary::InvalidObject>,
) {
    match event {
        WatchEvent::Init => (Some(WatchEvent::Init), None),
        WatchEvent::InitDone => (Some(WatchEvent::InitDone), None),
        WatchEvent::Apply(DeserializeGuard(Ok(k))) => (Some(WatchEvent::Apply(k)), None),
        WatchEvent::InitApply(DeserializeGuard(Ok(k))) => (Some(WatchEvent::InitApply(k)), None),
        WatchEvent::Delete(DeserializeGuard(Ok(k))) => (Some(WatchEvent::Delete(k)), None),
        WatchEvent::Apply(DeserializeGuard(Err(invalid)))
        | WatchEvent::InitApply(DeserializeGuard(Err(invalid))) => (None, Some(invalid)),
        // Gone: its last valid version, if any, must leave the caches.
        WatchEvent::Delete(DeserializeGuard(Err(invalid))) => {
            (placeholder(invalid.metadata).map(WatchEvent::Delete), None)
        }
    }
}

async fn report<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    invalid: kube::core::error_boundary::InvalidObject,
) {
    let kind = K::kind(&());
    let meta = &invalid.metadata;
    let message = super::error::sanitize(
        &format!(
            "{kind} {}/{} cannot be read by plugboard and is ignored until it is fixed: {}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            invalid.error
        ),
        1024,
    );
    tracing::warn!(%kind, namespace = meta.namespace.as_deref().unwrap_or_default(), name = meta.name.as_deref().unwrap_or_default(), error = %invalid.error, "ignoring an object that cannot be read");
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(kind.into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: INVALID_OBJECT.into(),
        note: Some(message),
        action: "Read".into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &reference).await {
        tracing::debug!(%error, "could not record the InvalidObject Event");
    }
}

/// A stand-in for a deleted object that could not be read: `K` with its metadata and an empty
/// spec (used only to remove it from caches).
pub(crate) fn placeholder<K: Resource<DynamicType = ()> + DeserializeOwned>(
    metadata: ObjectMeta,
) -> Option<K> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "spec": {},
    }))
    .ok()
}

/// A controller of `K` fed by a [`watch`] of `api` (so one unreadable object never stops it),
/// with a store of its own. With `trigger`, a change to an object wakes its reconcile only when
/// `trigger` gives a different value than for the previous version (the store sees every
/// change all the same).
pub(crate) fn controller<K>(
    api: Api<DeserializeGuard<K>>,
    config: watcher::Config,
    recorder: Recorder,
    placeholder: fn(ObjectMeta) -> Option<K>,
    controller_config: kube::runtime::controller::Config,
    trigger: Option<fn(&K) -> Option<u64>>,
) -> kube::runtime::Controller<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use kube::runtime::WatchStreamExt as _;
    let (reader, writer) = kube::runtime::reflector::store::<K>();
    let objects =
        kube::runtime::reflector::reflector(writer, watch(api, config, recorder, placeholder))
            .applied_objects();
    let objects = match trigger {
        Some(trigger) => objects
            .predicate_filter(trigger, kube::runtime::PredicateConfig::default())
            .boxed(),
        None => objects.boxed(),
    };
    kube::runtime::Controller::for_stream(objects, reader).with_config(controller_config)
}

/// [`placeholder`] for a Plug, whose spec needs a Socket (an empty name: it wakes nothing).
pub(crate) fn placeholder_plug(metadata: ObjectMeta) -> Option<crate::crd::Plug> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": crate::crd::Plug::api_version(&()),
        "kind": "Plug",
        "metadata": metadata,
        "spec": {"socket": {"name": ""}},
    }))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Plug;

    #[test]
    fn watch_backoff_doubles_to_ten_seconds_and_starts_over() {
        let mut backoff = WatchBackoff::default();
        let t0 = Instant::now();
        let full: Vec<Duration> = (0..7)
            .map(|i| backoff.delay(t0 + Duration::from_secs(i), 1.0))
            .collect();
        let ms: Vec<u128> = full.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
        // Jitter keeps a delay between half and all of it.
        let half = backoff.delay(t0 + Duration::from_secs(8), 0.0);
        assert_eq!(half, Duration::from_secs(5));
        // A minute without failures, or a success (reset), starts over.
        assert_eq!(
            backoff.delay(t0 + Duration::from_secs(100), 1.0),
            WATCH_BACKOFF_MIN
        );
        backoff.delay(t0 + Duration::from_secs(101), 1.0);
        kube::runtime::utils::Backoff::reset(&mut backoff);
        assert_eq!(
            backoff.delay(t0 + Duration::from_secs(102), 1.0),
            WATCH_BACKOFF_MIN
        );
        assert_eq!(
            watch_config(watcher::Config::default()).timeout,
            Some(WATCH_TIMEOUT_SECS)
        );
    }

    #[test]
    fn an_object_the_types_cannot_read_is_left_out_and_its_deletion_passed_on() {
        let bad = serde_json::json!({
            "apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug",
            "metadata": {"name": "bad", "namespace": "team", "uid": "u-1"},
            "spec": {"socket": {"name": "db"},
                     "apparatus": {"endpoint": "http://x", "idleTimeout": 5_000_000_000u64}},
        });
        let guarded: DeserializeGuard<Plug> = serde_json::from_value(bad).unwrap();
        let (valid, invalid) = split(WatchEvent::Apply(guarded.clone()), placeholder_plug);
        assert!(valid.is_none());
        let invalid = invalid.unwrap();
        assert_eq!(invalid.metadata.name.as_deref(), Some("bad"));
        assert!(invalid.error.contains("idle") || !invalid.error.is_empty());
        let (valid, invalid) = split(WatchEvent::Delete(guarded), placeholder_plug);
        assert!(invalid.is_none());
        match valid {
            Some(WatchEvent::Delete(plug)) => {
                assert_eq!(plug.metadata.name.as_deref(), Some("bad"));
            }
            other => panic!("{other:?}"),
        }
        let good: DeserializeGuard<Plug> = serde_json::from_value(serde_json::json!({
            "apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug",
            "metadata": {"name": "good", "namespace": "team"},
            "spec": {"socket": {"name": "db"}},
        }))
        .unwrap();
        assert!(matches!(
            split(WatchEvent::InitApply(good), placeholder_plug),
            (Some(WatchEvent::InitApply(_)), None)
        ));
        let socket: Option<crate::crd::Socket> = placeholder(ObjectMeta {
            name: Some("db".into()),
            ..Default::default()
        });
        assert!(socket.is_some());
        let deferred: Option<crate::crd::DeferredResource> = placeholder(ObjectMeta::default());
        assert!(deferred.is_some());
    }
}
