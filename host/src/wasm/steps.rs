//! Where the time of hook calls goes, step by step: counters summed over every call of a
//! runtime, cheap enough to keep on (a clock read per step), read by benchmarks and logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Time spent in each step of hook calls, summed over the calls since the runtime started
/// (see [`super::WasmRuntime::call_steps`]); subtract two readings for the calls in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallSteps {
    /// Calls counted.
    pub calls: u64,
    /// Turning the request into the component's input (objects to JSON, configs to lists).
    pub encode: Duration,
    /// Waiting for one of the runtime's call slots.
    pub queue: Duration,
    /// Getting to where the call runs (a thread hop, when there is one).
    pub dispatch: Duration,
    /// The store and its WASI context, limits and deadline.
    pub setup: Duration,
    /// Instantiating the pre-linked component in the fresh store.
    pub instantiate: Duration,
    /// The hook itself, guest code and host imports.
    pub call: Duration,
    /// Dropping the instance (its memory goes back to the pool) and flushing guest output.
    pub teardown: Duration,
    /// Getting the result back to the caller (a thread hop, when there is one).
    pub resume: Duration,
}

impl CallSteps {
    /// The steps of the calls between `earlier` and `self`.
    pub fn since(&self, earlier: &CallSteps) -> CallSteps {
        CallSteps {
            calls: self.calls.saturating_sub(earlier.calls),
            encode: self.encode.saturating_sub(earlier.encode),
            queue: self.queue.saturating_sub(earlier.queue),
            dispatch: self.dispatch.saturating_sub(earlier.dispatch),
            setup: self.setup.saturating_sub(earlier.setup),
            instantiate: self.instantiate.saturating_sub(earlier.instantiate),
            call: self.call.saturating_sub(earlier.call),
            teardown: self.teardown.saturating_sub(earlier.teardown),
            resume: self.resume.saturating_sub(earlier.resume),
        }
    }

    /// Each step with its name, in call order.
    pub fn named(&self) -> [(&'static str, Duration); 8] {
        [
            ("encode", self.encode),
            ("queue", self.queue),
            ("dispatch", self.dispatch),
            ("setup", self.setup),
            ("instantiate", self.instantiate),
            ("call", self.call),
            ("teardown", self.teardown),
            ("resume", self.resume),
        ]
    }
}

/// The step counters of one runtime, in nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct StepCounters {
    calls: AtomicU64,
    encode: AtomicU64,
    queue: AtomicU64,
    dispatch: AtomicU64,
    setup: AtomicU64,
    instantiate: AtomicU64,
    call: AtomicU64,
    teardown: AtomicU64,
    resume: AtomicU64,
}

/// One step of [`CallSteps`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    Encode,
    Queue,
    Dispatch,
    Setup,
    Instantiate,
    Call,
    Teardown,
    Resume,
}

impl StepCounters {
    fn counter(&self, step: Step) -> &AtomicU64 {
        match step {
            Step::Encode => &self.encode,
            Step::Queue => &self.queue,
            Step::Dispatch => &self.dispatch,
            Step::Setup => &self.setup,
            Step::Instantiate => &self.instantiate,
            Step::Call => &self.call,
            Step::Teardown => &self.teardown,
            Step::Resume => &self.resume,
        }
    }

    /// Adds the time from `since` to now to `step`; returns now, the start of the next step.
    pub(crate) fn lap(&self, step: Step, since: Instant) -> Instant {
        let now = Instant::now();
        let nanos = u64::try_from(now.saturating_duration_since(since).as_nanos()).unwrap_or(0);
        self.counter(step).fetch_add(nanos, Ordering::Relaxed);
        now
    }

    /// Counts one call.
    pub(crate) fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> CallSteps {
        let get = |step| Duration::from_nanos(self.counter(step).load(Ordering::Relaxed));
        CallSteps {
            calls: self.calls.load(Ordering::Relaxed),
            encode: get(Step::Encode),
            queue: get(Step::Queue),
            dispatch: get(Step::Dispatch),
            setup: get(Step::Setup),
            instantiate: get(Step::Instantiate),
            call: get(Step::Call),
            teardown: get(Step::Teardown),
            resume: get(Step::Resume),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_per_step_and_readings_subtract() {
        let counters = StepCounters::default();
        let start = Instant::now();
        let next = counters.lap(Step::Setup, start - Duration::from_micros(5));
        counters.lap(Step::Call, next - Duration::from_micros(7));
        counters.count();
        let first = counters.read();
        assert_eq!(first.calls, 1);
        assert!(first.setup >= Duration::from_micros(5));
        assert!(first.call >= Duration::from_micros(7));
        assert_eq!(first.queue, Duration::ZERO);
        counters.lap(Step::Call, Instant::now() - Duration::from_micros(3));
        counters.count();
        let delta = counters.read().since(&first);
        assert_eq!(delta.calls, 1);
        assert!(delta.call >= Duration::from_micros(3) && delta.call < first.call + delta.call);
        assert_eq!(delta.setup, Duration::ZERO);
        assert_eq!(delta.named()[5].0, "call");
    }
}
