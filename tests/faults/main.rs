//! Fault-injection tests against a real control plane: the operator process SIGKILLed at random
//! points while Plugs couple, update and decouple ([`kill`]); the API server and etcd restarted
//! in the middle of couplings, and the registry restarted during pulls ([`restart`]); two
//! operator processes with leader election and the leader SIGKILLed, the health and metrics
//! server, and a graceful SIGTERM ([`leader`]).
//!
//! They have their own test binary, and so their own control plane: restarting it must not
//! disturb the other end-to-end tests. Every test is bounded (a fixed number of faults, each
//! wait with a deadline) and stops by itself. Random schedules come from a seeded generator;
//! the seed is printed (`--nocapture`) and `PLUGBOARD_FAULT_SEED=<seed>` replays a run.
//!
//! The random pauses before each fault are the fault *schedule* (where in the operator's work
//! the fault lands), not synchronisation: nothing waits on them for a state. Every state the
//! tests expect is awaited with `plugboard_tests::wait_for` and a deadline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests and their helpers fail by panicking"
)]

mod kill;
mod leader;
mod restart;

use std::time::{SystemTime, UNIX_EPOCH};

use rand::SeedableRng as _;
use rand::rngs::StdRng;

/// Held by each test for its whole run: a test that restarts the control plane must not pull
/// it from under another.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Environment variable that fixes the seed of the random fault schedules.
pub const SEED_ENV: &str = "PLUGBOARD_FAULT_SEED";

/// A generator seeded from [`SEED_ENV`], else from the clock; prints the seed so that a failing
/// schedule can be replayed.
pub fn seeded_rng(test: &str) -> StdRng {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
    eprintln!("{test}: fault schedule seed {seed} (replay with {SEED_ENV}={seed})");
    StdRng::seed_from_u64(seed)
}

/// A positive number from environment variable `name`, else `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}
