//! The pure decisions of leader election, as client-go's `leaderelection` package makes them:
//! a candidate judges the Lease by when *it* first saw the current record (its own monotonic
//! clock), never by the timestamps written in it, so clock skew between nodes cannot make a
//! held lease look expired.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

/// How long a lease lasts and how the holder keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a standby waits, from when it saw the last renewal, before it takes the lease.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops leading: shorter than the
    /// lease duration, so it has stopped before a standby may take over.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries to acquire.
    pub retry_period: Duration,
}

impl Timing {
    /// client-go's proportions: 15 s lease → 10 s renew deadline → 2 s retry period.
    pub fn from_lease_seconds(seconds: u64) -> Self {
        let millis = seconds.max(1).saturating_mul(1000);
        Self {
            lease_duration: Duration::from_millis(millis),
            renew_deadline: Duration::from_millis(millis * 2 / 3),
            retry_period: Duration::from_millis((millis * 2 / 15).max(100)),
        }
    }
}

/// The record last seen and when this process first saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The Lease spec as read.
    pub spec: LeaseSpec,
    /// When it was first seen in this form.
    pub at: Instant,
}

/// What to do with the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, held by us.
    Create,
    /// Another holder's lease has not expired: wait.
    Wait,
    /// Write it held by us: a renewal (`acquire == false`) keeps the acquire time and the
    /// transition count, an acquisition sets a new acquire time and counts a transition.
    Claim {
        /// Whether the holder changes.
        acquire: bool,
    },
}

/// The holder named in `spec`, if any (an empty name is none: a released lease).
pub fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// Decides what `me` does with the Lease read as `current` at `now`, updating `observed` (the
/// record last seen and when it was first seen). `default_duration` is used when the record
/// states no duration.
pub fn decide(
    current: Option<&LeaseSpec>,
    observed: &mut Option<Observation>,
    me: &str,
    now: Instant,
    default_duration: Duration,
) -> Decision {
    let Some(spec) = current else {
        *observed = None;
        return Decision::Create;
    };
    if observed.as_ref().is_none_or(|o| &o.spec != spec) {
        *observed = Some(Observation {
            spec: spec.clone(),
            at: now,
        });
    }
    let seen_at = observed.as_ref().map_or(now, |o| o.at);
    match holder(spec) {
        Some(h) if h == me => Decision::Claim { acquire: false },
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(default_duration, Duration::from_secs);
            if now < seen_at + duration {
                Decision::Wait
            } else {
                Decision::Claim { acquire: true }
            }
        }
        None => Decision::Claim { acquire: true },
    }
}

/// The spec to write for `decision` (not [`Decision::Wait`]): held by `me` for `duration`,
/// renewed at `wall_now`.
pub fn claimed(
    current: Option<&LeaseSpec>,
    me: &str,
    wall_now: &MicroTime,
    duration: Duration,
    acquire: bool,
) -> LeaseSpec {
    let previous = current.cloned().unwrap_or_default();
    let transitions = previous.lease_transitions.unwrap_or(0);
    // A lease that had a holder before changes hands: count it, as client-go does.
    let changed_hands = acquire && current.and_then(holder).is_some();
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)),
        acquire_time: if acquire || previous.acquire_time.is_none() {
            Some(wall_now.clone())
        } else {
            previous.acquire_time.clone()
        },
        renew_time: Some(wall_now.clone()),
        lease_transitions: Some(if changed_hands {
            transitions.saturating_add(1)
        } else {
            transitions
        }),
        ..previous
    }
}

/// The spec that gives the lease up, if `me` holds it: no holder, so a standby takes it at its
/// next try instead of waiting for it to expire.
pub fn released(current: &LeaseSpec, me: &str, wall_now: &MicroTime) -> Option<LeaseSpec> {
    (holder(current) == Some(me)).then(|| LeaseSpec {
        holder_identity: None,
        renew_time: Some(wall_now.clone()),
        ..current.clone()
    })
}

/// Whether a leader whose last successful renewal was sent at `renewed` must stop leading:
/// its renew deadline has passed, and a standby may take the lease once the lease duration has.
pub fn renew_deadline_passed(renewed: Instant, now: Instant, timing: &Timing) -> bool {
    now >= renewed + timing.renew_deadline
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn spec(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(wall(renewed)),
            ..Default::default()
        }
    }

    fn wall(seconds: i64) -> MicroTime {
        MicroTime(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + seconds)
                .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        )
    }

    #[test]
    fn timing_follows_client_go_proportions() {
        let t = Timing::from_lease_seconds(15);
        assert_eq!(t.lease_duration, Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        let t = Timing::from_lease_seconds(60);
        assert_eq!(t.renew_deadline, Duration::from_secs(40));
        assert!(t.renew_deadline < t.lease_duration && t.retry_period < t.renew_deadline);
    }

    #[test]
    fn no_lease_means_create() {
        let mut observed = None;
        assert_eq!(
            decide(None, &mut observed, "a", Instant::now(), LEASE),
            Decision::Create
        );
    }

    #[test]
    fn a_held_lease_is_left_alone_until_it_expires_by_our_own_clock() {
        let t0 = Instant::now();
        let mut observed = None;
        let held = spec(Some("b"), 0);
        assert_eq!(
            decide(Some(&held), &mut observed, "a", t0, LEASE),
            Decision::Wait
        );
        // Unchanged for less than the lease duration: still held, whatever the renew time says.
        let t1 = t0 + Duration::from_secs(14);
        assert_eq!(
            decide(Some(&held), &mut observed, "a", t1, LEASE),
            Decision::Wait
        );
        // Unchanged for the lease duration: the holder stopped renewing.
        let t2 = t0 + LEASE;
        assert_eq!(
            decide(Some(&held), &mut observed, "a", t2, LEASE),
            Decision::Claim { acquire: true }
        );
    }

    #[test]
    fn a_renewal_restarts_the_standbys_wait() {
        let t0 = Instant::now();
        let mut observed = None;
        decide(Some(&spec(Some("b"), 0)), &mut observed, "a", t0, LEASE);
        let t1 = t0 + Duration::from_secs(10);
        let renewed = spec(Some("b"), 10);
        assert_eq!(
            decide(Some(&renewed), &mut observed, "a", t1, LEASE),
            Decision::Wait
        );
        // 15 s after the first sight, but only 5 s after the renewal was seen.
        let t2 = t0 + LEASE;
        assert_eq!(
            decide(Some(&renewed), &mut observed, "a", t2, LEASE),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&renewed), &mut observed, "a", t1 + LEASE, LEASE),
            Decision::Claim { acquire: true }
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut observed = None;
        let free = spec(None, 0);
        assert_eq!(
            decide(Some(&free), &mut observed, "a", Instant::now(), LEASE),
            Decision::Claim { acquire: true }
        );
        let empty = spec(Some(""), 0);
        assert_eq!(
            decide(Some(&empty), &mut observed, "a", Instant::now(), LEASE),
            Decision::Claim { acquire: true }
        );
    }

    #[test]
    fn the_holder_renews_its_own_lease() {
        let mut observed = None;
        let mine = spec(Some("a"), 0);
        assert_eq!(
            decide(Some(&mine), &mut observed, "a", Instant::now(), LEASE),
            Decision::Claim { acquire: false }
        );
    }

    #[test]
    fn a_renewal_keeps_acquire_time_and_transitions_an_acquisition_counts_one() {
        let mut mine = spec(Some("a"), 0);
        mine.acquire_time = Some(wall(-100));
        mine.lease_transitions = Some(3);
        let renewed = claimed(Some(&mine), "a", &wall(5), LEASE, false);
        assert_eq!(renewed.acquire_time, Some(wall(-100)));
        assert_eq!(renewed.renew_time, Some(wall(5)));
        assert_eq!(renewed.lease_transitions, Some(3));
        let taken = claimed(Some(&mine), "b", &wall(30), LEASE, true);
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.acquire_time, Some(wall(30)));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.lease_duration_seconds, Some(15));
        // Taking a released lease is not a change of hands.
        let free = released(&mine, "a", &wall(6));
        let taken = claimed(free.as_ref(), "b", &wall(7), LEASE, true);
        assert_eq!(taken.lease_transitions, Some(3));
    }

    #[test]
    fn only_the_holder_releases() {
        let mine = spec(Some("a"), 0);
        let free = released(&mine, "a", &wall(1)).map(|s| s.holder_identity);
        assert_eq!(free, Some(None));
        assert_eq!(released(&mine, "b", &wall(1)), None);
    }

    #[test]
    fn a_leader_stops_before_a_standby_may_take_over() {
        let timing = Timing::from_lease_seconds(15);
        let renewed = Instant::now();
        assert!(!renew_deadline_passed(
            renewed,
            renewed + Duration::from_secs(9),
            &timing
        ));
        assert!(renew_deadline_passed(
            renewed + Duration::ZERO,
            renewed + timing.renew_deadline,
            &timing
        ));
        // The standby's earliest takeover counts from when it saw that renewal, which is no
        // earlier than when the leader sent it.
        assert!(timing.renew_deadline < timing.lease_duration);
    }
}
