//! One hook call: a fresh store and a fresh instance of the pre-linked component, run on the
//! caller's task with wasmtime's async support. Nothing else is made per call: the engine,
//! linker, `InstancePre`, HTTP client and egress policy are the runtime's, shared.
//!
//! The deadline is checked at every epoch tick, where a running guest also yields to the async
//! runtime, so a busy guest holds a runtime thread for at most one tick at a time and never
//! past its deadline; `host.send` awaits its request instead of blocking a thread. Memory a
//! call grew past [`INLINE_TEARDOWN_BYTES`] is given back to the pool on a blocking thread,
//! with the call's slot, so resetting a large memory holds no runtime thread either.

use crate::apparatus::HookErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::bindings::{self, plugboard::apparatus::types as wit};
use super::secrets::truncate;
use super::state::CallState;
use super::steps::{Step, StepCounters};
use super::{CallContext, CallLimits, Loaded, WasmError};
use crate::crd::LifecyclePoint;
use crate::egress::EgressPolicy;

/// What every call of a runtime shares.
pub(super) struct Shared {
    pub(super) engine: Engine,
    /// `host.send`'s client, built on first use (loading the platform's root certificates
    /// would otherwise be most of a runtime's start).
    pub(super) http: std::sync::OnceLock<Result<reqwest::Client, String>>,
    pub(super) egress: EgressPolicy,
    /// Bytes of guest stdout, stderr and `host.log` kept per call.
    pub(super) output_budget: usize,
    /// Timeout of one `host.send` request.
    pub(super) http_timeout: Duration,
    /// Largest `host.send` response body.
    pub(super) http_max_body: usize,
}

impl Shared {
    /// `host.send`'s client: only to what the egress policy permits, never following
    /// redirects.
    pub(super) fn client(&self) -> Result<&reqwest::Client, &str> {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .tls_backend_preconfigured(crate::apparatus::http::tls_config())
                    .timeout(self.http_timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    // A proxy from the environment would be judged instead of the target.
                    .no_proxy()
                    .dns_resolver(self.egress.resolver())
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

/// Linear memory, over all of a call's memories, that its teardown resets on the caller's
/// thread; more is reset on a blocking thread. Resetting costs in proportion to the pages
/// touched, so a few MiB stay well under a millisecond.
const INLINE_TEARDOWN_BYTES: usize = 4 << 20;

/// The hook to run and its input.
pub(super) enum Invocation {
    Config(wit::ConfigInput),
    Hook(LifecyclePoint, wit::Coupling),
}

/// What a hook returned.
pub(super) enum Outcome {
    Config(Vec<(String, String)>),
    Hook,
}

async fn invoke(
    store: &mut Store<CallState>,
    apparatus: &bindings::Apparatus,
    invocation: Invocation,
) -> wasmtime::Result<Result<Outcome, wit::HookError>> {
    let hooks = apparatus.plugboard_apparatus_hooks();
    Ok(match invocation {
        Invocation::Config(input) => hooks
            .call_config(&mut *store, &input)
            .await?
            .map(Outcome::Config),
        Invocation::Hook(point, input) => match point {
            LifecyclePoint::Created => hooks.call_created(&mut *store, &input).await?,
            LifecyclePoint::Coupled => hooks.call_coupled(&mut *store, &input).await?,
            LifecyclePoint::Updated => hooks.call_updated(&mut *store, &input).await?,
            LifecyclePoint::Decoupled => hooks.call_decoupled(&mut *store, &input).await?,
            LifecyclePoint::Deleted => hooks.call_deleted(&mut *store, &input).await?,
        }
        .map(|()| Outcome::Hook),
    })
}

/// Runs `invocation` in a fresh instance of `loaded`, holding `permit` (one of the runtime's
/// call slots) until the instance's memory is back in the pool.
#[allow(
    clippy::too_many_arguments,
    reason = "one call's whole context, passed once"
)]
pub(super) async fn run(
    shared: &Arc<Shared>,
    loaded: &Loaded,
    hook: &'static str,
    limits: CallLimits,
    context: CallContext,
    secrets: &[String],
    permit: OwnedSemaphorePermit,
    steps: &StepCounters,
    ready: Instant,
    invocation: Invocation,
) -> Result<Outcome, WasmError> {
    let owner = context.owner.clone();
    let (state, output) = CallState::new(context, &limits, shared.clone(), secrets.to_vec());
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|s| &mut s.limiter);
    let deadline = ready + limits.timeout;
    // Every tick: past the deadline, stop; else let other tasks run and go on.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
        })
    });
    let started = steps.lap(Step::Setup, ready);
    let result = match loaded.pre.instantiate_async(&mut store).await {
        Ok(apparatus) => {
            let instantiated = steps.lap(Step::Instantiate, started);
            let result = invoke(&mut store, &apparatus, invocation).await;
            steps.lap(Step::Call, instantiated);
            result
        }
        Err(error) => {
            steps.lap(Step::Instantiate, started);
            Err(error)
        }
    };
    let ending = Instant::now();
    let elapsed = ending.saturating_duration_since(started);
    let state = store.data_mut();
    let denied_memory = state.limiter.denied;
    let used = state.limiter.used;
    let last_log = state.last_log.take();
    let egress_denied = state.egress_denied.take();
    release(store, permit, used);
    output.flush(&owner, hook, secrets);
    steps.lap(Step::Teardown, ending);
    tracing::debug!(
        owner = %owner,
        hook,
        us = elapsed.as_micros() as u64,
        "WebAssembly hook call"
    );
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            let (kind, message) = match error {
                wit::HookError::InvalidInput(m) => (HookErrorKind::InvalidInput, m),
                wit::HookError::RetryLater(m) => (HookErrorKind::RetryLater, m),
                wit::HookError::Failed(m) => (HookErrorKind::Failed, m),
            };
            if let Some(source) = egress_denied {
                return Err(WasmError::EgressDenied {
                    hook,
                    kind,
                    message: truncate(message, 1024),
                    source,
                });
            }
            Err(WasmError::Guest {
                hook,
                kind,
                message: truncate(message, 1024),
            })
        }
        Err(error) => Err(classify(
            error,
            hook,
            &limits,
            denied_memory,
            output.overflowed(),
            shared.output_budget,
            last_log,
        )),
    }
}

/// Drops the store — its instance's memories and tables go back to the pool — and then the
/// call slot: here when the memories are small, on a blocking thread when they are not.
fn release(store: Store<CallState>, permit: OwnedSemaphorePermit, used: usize) {
    if used <= INLINE_TEARDOWN_BYTES {
        drop(store);
        drop(permit);
        return;
    }
    tokio::task::spawn_blocking(move || {
        drop(store);
        drop(permit);
    });
}

fn classify(
    error: wasmtime::Error,
    hook: &'static str,
    limits: &CallLimits,
    denied_memory: bool,
    flooded: bool,
    budget: usize,
    last_log: Option<String>,
) -> WasmError {
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return WasmError::Timeout {
            hook,
            after: limits.timeout,
        };
    }
    if denied_memory {
        return WasmError::OutOfMemory {
            hook,
            limit: limits.memory,
        };
    }
    if flooded {
        return WasmError::OutputFlood { hook, budget };
    }
    let mut message = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    if let Some(line) = last_log {
        message.push_str(&format!(" (last log line: {line})"));
    }
    WasmError::Trap {
        hook,
        message: truncate(message, 1024),
    }
}
