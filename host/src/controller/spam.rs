//! Client-side rate limiting of Normal Events, as client-go's `EventSourceObjectSpamFilter`
//! does it: a token bucket per involved object, holding at most [`BURST`] tokens and getting
//! one back every [`REFILL`]. Each Normal Event takes a token; one that finds the bucket empty
//! is dropped (and counted). Warning Events never come here: they are never dropped.
//!
//! So an object gets its first 25 Normal Events at once and then one every five minutes,
//! however many couplings it takes part in (a Socket with a thousand Plugs gets 25 `SocketCoupled`
//! Events, not a thousand). Buckets that are full again are forgotten (a forgotten object starts
//! with a full bucket, the same thing), and at most [`MAX_OBJECTS`] are kept: past that, the
//! one used least recently goes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Events an object may get at once.
pub(crate) const BURST: u32 = 25;
/// Time for one token to come back.
pub(crate) const REFILL: Duration = Duration::from_secs(300);
/// Objects whose buckets are remembered at most (client-go's LRU holds as many).
pub(crate) const MAX_OBJECTS: usize = 4096;
/// How often buckets that are full again are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last computed (when a token was last taken).
    at: Instant,
    /// When an Event about the object was last seen, allowed or not.
    used: Instant,
}

/// Token buckets by involved object.
#[derive(Debug)]
pub(crate) struct SpamFilter {
    burst: f64,
    refill: Duration,
    max_objects: usize,
    buckets: HashMap<String, Bucket>,
    pruned: Option<Instant>,
}

impl Default for SpamFilter {
    fn default() -> Self {
        Self::new(BURST, REFILL, MAX_OBJECTS)
    }
}

impl SpamFilter {
    /// Buckets of `burst` tokens, one back every `refill`, for at most `max_objects` objects.
    pub(crate) fn new(burst: u32, refill: Duration, max_objects: usize) -> Self {
        Self {
            burst: f64::from(burst),
            refill,
            max_objects: max_objects.max(1),
            buckets: HashMap::new(),
            pruned: None,
        }
    }

    fn tokens(&self, bucket: Bucket, now: Instant) -> f64 {
        let back = now.saturating_duration_since(bucket.at).as_secs_f64()
            / self.refill.as_secs_f64().max(f64::MIN_POSITIVE);
        (bucket.tokens + back).min(self.burst)
    }

    /// Whether an Event about object `key` may go out at `now`; takes a token if so.
    pub(crate) fn allow(&mut self, key: &str, now: Instant) -> bool {
        if self
            .pruned
            .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY)
        {
            self.prune(now);
        }
        let tokens = self.buckets.get(key).map(|b| self.tokens(*b, now));
        if let (Some(tokens), Some(bucket)) = (tokens, self.buckets.get_mut(key)) {
            bucket.used = now;
            // A refused Event takes nothing, so the bucket is left as it was computed.
            if tokens < 1.0 {
                return false;
            }
            bucket.tokens = tokens - 1.0;
            bucket.at = now;
            return true;
        }
        if self.buckets.len() >= self.max_objects {
            self.prune(now);
        }
        if self.buckets.len() >= self.max_objects
            && let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.used)
                .map(|(k, _)| k.clone())
        {
            self.buckets.remove(&oldest);
        }
        self.buckets.insert(
            key.to_owned(),
            Bucket {
                tokens: self.burst - 1.0,
                at: now,
                used: now,
            },
        );
        true
    }

    /// Forgets the buckets that are full again.
    fn prune(&mut self, now: Instant) {
        let full = self.burst;
        let buckets = std::mem::take(&mut self.buckets);
        self.buckets = buckets
            .into_iter()
            .filter(|(_, b)| self.tokens(*b, now) < full)
            .collect();
        self.pruned = Some(now);
    }

    /// Objects remembered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The key of an involved object: its kind, namespace, name, uid and API version (what
/// client-go's spam key names besides the reporting component, which is always this one).
pub(crate) fn key(reference: &k8s_openapi::api::core::v1::ObjectReference) -> String {
    [
        reference.kind.as_deref(),
        reference.namespace.as_deref(),
        reference.name.as_deref(),
        reference.uid.as_deref(),
        reference.api_version.as_deref(),
    ]
    .map(Option::unwrap_or_default)
    .join("\u{0}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn an_object_gets_its_burst_then_one_per_refill() {
        let mut filter = SpamFilter::default();
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| filter.allow("socket", t0)).count();
        assert_eq!(allowed, 25);
        // Nothing more until a token is back.
        assert!(!filter.allow("socket", at(t0, 299)));
        assert!(filter.allow("socket", at(t0, 300)));
        assert!(!filter.allow("socket", at(t0, 301)));
        // Ten tokens come back in fifty minutes, not more.
        let later = at(t0, 300 + 10 * 300);
        assert_eq!(
            (0..100).filter(|_| filter.allow("socket", later)).count(),
            10
        );
    }

    #[test]
    fn objects_have_buckets_of_their_own() {
        let mut filter = SpamFilter::default();
        let t0 = Instant::now();
        for _ in 0..25 {
            assert!(filter.allow("socket", t0));
        }
        assert!(!filter.allow("socket", t0));
        for plug in 0..1000 {
            assert!(filter.allow(&format!("plug-{plug}"), t0));
        }
    }

    #[test]
    fn a_bucket_never_holds_more_than_the_burst() {
        let mut filter = SpamFilter::new(3, Duration::from_secs(10), 16);
        let t0 = Instant::now();
        assert!(filter.allow("a", t0));
        // A day later: full, that is three, not thousands.
        let later = at(t0, 86_400);
        assert_eq!((0..10).filter(|_| filter.allow("a", later)).count(), 3);
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let mut filter = SpamFilter::new(2, Duration::from_secs(10), 100);
        let t0 = Instant::now();
        for i in 0..50 {
            filter.allow(&format!("o-{i}"), t0);
        }
        assert_eq!(filter.len(), 50);
        // Twenty seconds later every bucket is full again; the next look prunes them.
        filter.allow("new", at(t0, 70));
        assert_eq!(filter.len(), 1);
    }

    #[test]
    fn the_map_stays_bounded_and_drops_the_least_recently_used() {
        let mut filter = SpamFilter::new(2, Duration::from_secs(3600), 10);
        let t0 = Instant::now();
        for i in 0..10u64 {
            filter.allow(&format!("o-{i}"), at(t0, i));
        }
        // `o-0` used again: `o-1` is now the least recently used.
        filter.allow("o-0", at(t0, 20));
        assert!(!filter.allow("o-0", at(t0, 21)));
        for i in 10..1000u64 {
            filter.allow(&format!("o-{i}"), at(t0, 30 + i));
            assert!(filter.len() <= 10);
        }
        // Forgotten objects start with a full bucket again.
        assert!(filter.allow("o-1", at(t0, 2000)));
        assert!(filter.allow("o-1", at(t0, 2000)));
        assert!(!filter.allow("o-1", at(t0, 2000)));
    }

    #[test]
    fn keys_tell_objects_apart_by_uid() {
        let reference = |uid: &str| k8s_openapi::api::core::v1::ObjectReference {
            kind: Some("Socket".into()),
            namespace: Some("ns".into()),
            name: Some("db".into()),
            uid: Some(uid.into()),
            api_version: Some("plugboard.dev/v1alpha1".into()),
            ..Default::default()
        };
        assert_eq!(key(&reference("a")), key(&reference("a")));
        assert_ne!(key(&reference("a")), key(&reference("b")));
    }
}
