//! The controllers' periodic memory pass: what a burst of couplings or deletions leaves behind
//! is given back, so that the operator returns near its idle size (see [`crate::heap`]).

use std::sync::Arc;
use std::time::Duration;

use super::Context;

/// How often the pass runs.
pub(crate) const EVERY: Duration = Duration::from_secs(10);

/// Runs the pass every [`EVERY`], forever: Events whose series can no longer grow are
/// forgotten, then the allocator's free pages are given back to the system.
pub(crate) async fn run(ctx: Arc<Context>) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        ctx.recorder.expire();
        // It holds the allocator's locks for a few milliseconds: not on a runtime worker.
        match tokio::task::spawn_blocking(crate::heap::release).await {
            Ok(true) => ctx.metrics.heap_released(),
            Ok(false) => {}
            Err(error) => tracing::debug!(%error, "the memory pass did not finish"),
        }
    }
}
