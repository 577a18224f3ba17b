//! Fairness between objects: a few slow or failing ones must not stall everyone.
//!
//! - **Backoff per object.** kube-runtime's `error_policy` has no per-object backoff, so the
//!   operator keeps a small bounded map of consecutive failures per object: the delay before
//!   the next attempt doubles with each failure, from [`super::Options::retry_min`] up to
//!   [`super::Options::retry`], with jitter (between half and all of it), and a success forgets
//!   the count. A reconcile that ends with a failure written to status (a Stalled condition)
//!   counts as a failure too ([`Context::retry_delay`]).
//! - **A deadline per reconcile** ([`super::Options::reconcile_deadline`]): a reconcile still
//!   running past it is dropped and retried with backoff, so no worker is held forever.
//! - **Hook calls per Socket** ([`super::Options::hook_calls_per_socket`]): the hook and
//!   `config` calls of one coupling's Socket (its own, and those of the Plugs coupling to it)
//!   in flight at once are bounded, and a call waits for a slot at most
//!   [`super::Options::hook_slot_wait`]; so Plugs of a hanging Socket apparatus hold only a
//!   few of the Plug controller's workers (of which there are
//!   [`super::Options::plug_concurrency`], more than of the other controllers, since Plug
//!   reconciles spend their time waiting on apparatuses).

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::controller::Action;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Context, Error};

/// Objects whose failures are counted at most; the map is cleared when it grows past this
/// (forgetting counts only shortens some delays).
const MAX_TRACKED: usize = 8192;

/// Consecutive failures per object.
#[derive(Debug, Default)]
pub(crate) struct Retries {
    failures: Mutex<HashMap<String, u32>>,
}

impl Retries {
    /// Counts a failure of `key` and gives the delay before its next attempt.
    pub(crate) fn next(&self, key: &str, min: Duration, max: Duration) -> Duration {
        let failures = {
            let mut map = self
                .failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.len() >= MAX_TRACKED && !map.contains_key(key) {
                map.clear();
            }
            let n = map.entry(key.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        backoff(failures, min, max, random_fraction())
    }

    /// Forgets the failures of `key` (it succeeded).
    pub(crate) fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// The consecutive failures of `key`.
    #[cfg(test)]
    pub(crate) fn count(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// The delay after the `failures`-th consecutive failure: `min × 2^(failures-1)` capped at
/// `max`, then scaled into `[½, 1]` of itself by `fraction` (in `[0, 1]`), never below `min`.
pub(super) fn backoff(failures: u32, min: Duration, max: Duration, fraction: f64) -> Duration {
    let max = max.max(min);
    let exponent = failures.saturating_sub(1).min(32);
    let full = min.saturating_mul(1u32 << exponent.min(31)).min(max);
    let jittered = full.mul_f64(0.5 + 0.5 * fraction.clamp(0.0, 1.0));
    jittered.max(min)
}

/// A random number in `[0, 1]`.
pub(super) fn random_fraction() -> f64 {
    let mut bytes = [0u8; 4];
    // Jitter only: a failed read just means no spread.
    let _ = getrandom::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

tokio::task_local! {
    static ATTEMPT: Attempt;
}

/// The reconcile running on this task: its object's key, and whether it ended in a failure.
struct Attempt {
    key: String,
    failed: Cell<bool>,
    /// The reason of the failure the reconcile wrote to status, for the error metrics.
    reason: Cell<Option<&'static str>>,
}

/// Records that the reconcile running on this task wrote a failure with `reason` to status
/// (counted in `plugboard_reconcile_errors_total`). Outside [`attempt`] it does nothing.
pub(crate) fn note_failure(reason: &'static str) {
    let _ = ATTEMPT.try_with(|a| a.reason.set(Some(reason)));
}

/// The delay before looking again at the object this task reconciles after a failure: with
/// backoff when called inside [`attempt`] (it then also marks the attempt failed, so its
/// count is kept), the fixed maximum otherwise.
pub(crate) fn retry_delay(ctx: &Context) -> Duration {
    let key = ATTEMPT
        .try_with(|a| {
            a.failed.set(true);
            a.key.clone()
        })
        .ok();
    match key {
        Some(key) => ctx
            .retries
            .next(&key, ctx.options.retry_min, ctx.options.retry),
        None => ctx.options.retry,
    }
}

/// Runs one reconcile of the object `key` under the reconcile deadline; a success that wrote
/// no failure forgets the object's failure count.
pub(crate) async fn attempt(
    key: String,
    ctx: Arc<Context>,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let deadline = ctx.options.reconcile_deadline;
    // On the heap: a reconcile's future is large, and wrapping it must not make it larger on
    // the stack of the worker that polls it.
    let reconcile = Box::pin(reconcile);
    let state = Attempt {
        key: key.clone(),
        failed: Cell::new(false),
        reason: Cell::new(None),
    };
    let (result, failed, noted) = ATTEMPT
        .scope(state, async {
            let result = tokio::time::timeout(deadline, reconcile).await;
            let (failed, noted) = ATTEMPT.with(|a| (a.failed.get(), a.reason.get()));
            (result, failed, noted)
        })
        .await;
    let kind = key.split('/').next().unwrap_or_default();
    let reason = match &result {
        Ok(Ok(_)) => noted,
        Ok(Err(error)) => Some(error.reason()),
        Err(_) => Some("ReconcileTimeout"),
    };
    ctx.metrics.reconciled(kind, reason);
    match result {
        Ok(Ok(action)) => {
            if !failed {
                ctx.retries.reset(&key);
            }
            Ok(action)
        }
        Ok(Err(error)) => Err(error),
        Err(_) => {
            tracing::warn!(object = %key, seconds = deadline.as_secs(), "reconcile ran past its deadline; retrying");
            Err(Error::Deadline { after: deadline })
        }
    }
}

/// The `error_policy` of every controller: backoff per object.
pub(crate) fn on_error(key: &str, error: &Error, ctx: &Context) -> Action {
    let delay = ctx
        .retries
        .next(key, ctx.options.retry_min, ctx.options.retry);
    tracing::warn!(object = key, error = %error.message(), seconds = delay.as_secs_f64(), "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Slots for hook and `config` calls, per Socket.
#[derive(Debug, Default)]
pub(crate) struct HookSlots {
    sockets: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HookSlots {
    /// Waits (at most `wait`) for one of the `per_socket` slots of `socket`.
    pub(crate) async fn acquire(
        &self,
        socket: &str,
        per_socket: usize,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, Error> {
        let per_socket = per_socket.max(1);
        let semaphore = {
            let mut sockets = self
                .sockets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if sockets.len() >= MAX_TRACKED {
                // Drop the idle ones; those in use stay (their holders keep them alive anyway).
                sockets.retain(|_, s| s.available_permits() < per_socket);
            }
            sockets
                .entry(socket.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(per_socket)))
                .clone()
        };
        match tokio::time::timeout(wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::ApparatusBusy {
                socket: socket.to_owned(),
                limit: per_socket,
            }),
        }
    }
}

/// `namespace/name` of the Socket a call belongs to: the owner itself for a Socket's call, the
/// coupling's Socket (from its JSON) for a Plug's, the Plug when there is none.
pub(crate) fn socket_of(
    side: crate::apparatus::Side,
    owner_namespace: &str,
    owner_name: &str,
    socket: Option<&serde_json::Value>,
) -> String {
    let from_json = socket.and_then(|s| {
        let meta = s.get("metadata")?;
        Some(format!(
            "{}/{}",
            meta.get("namespace")?.as_str()?,
            meta.get("name")?.as_str()?
        ))
    });
    match (side, from_json) {
        (crate::apparatus::Side::Plug, Some(socket)) => socket,
        _ => format!("{owner_namespace}/{owner_name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let min = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, min, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, min, max, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(4, min, max, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(40, min, max, 1.0), max);
        assert_eq!(backoff(40, min, max, 0.0), Duration::from_secs(30));
        assert_eq!(backoff(1, min, max, 0.0), min, "never below the minimum");
        for n in 1..50 {
            let d = backoff(n, min, max, random_fraction());
            assert!(d >= min && d <= max, "{n}: {d:?}");
        }
    }

    #[test]
    fn failures_are_counted_per_object_and_forgotten_on_success() {
        let retries = Retries::default();
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..5 {
            retries.next("Plug/a/slow", min, max);
        }
        let late = retries.next("Plug/a/slow", min, max);
        let first = retries.next("Plug/a/other", min, max);
        assert!(late >= Duration::from_secs(16), "{late:?}");
        assert!(first <= Duration::from_secs(1), "{first:?}");
        retries.reset("Plug/a/slow");
        assert_eq!(retries.count("Plug/a/slow"), 0);
        assert_eq!(retries.count("Plug/a/other"), 1);
    }

    #[tokio::test]
    async fn a_socket_holds_a_bounded_number_of_slots() {
        let slots = HookSlots::default();
        let wait = Duration::from_millis(20);
        let a = slots.acquire("ns/db", 2, wait).await.unwrap();
        let _b = slots.acquire("ns/db", 2, wait).await.unwrap();
        let busy = slots.acquire("ns/db", 2, wait).await;
        assert!(
            matches!(busy, Err(Error::ApparatusBusy { limit: 2, .. })),
            "{busy:?}"
        );
        // Another Socket is not affected, and a freed slot is reused.
        let _other = slots.acquire("ns/cache", 2, wait).await.unwrap();
        drop(a);
        assert!(slots.acquire("ns/db", 2, wait).await.is_ok());
    }

    #[test]
    fn the_socket_of_a_plug_call_is_the_couplings() {
        let socket = serde_json::json!({"metadata": {"namespace": "team", "name": "db"}});
        assert_eq!(
            socket_of(crate::apparatus::Side::Plug, "team", "app", Some(&socket)),
            "team/db"
        );
        assert_eq!(
            socket_of(crate::apparatus::Side::Socket, "team", "db", None),
            "team/db"
        );
        assert_eq!(
            socket_of(crate::apparatus::Side::Plug, "team", "app", None),
            "team/app"
        );
    }
}
