//! Support code for plugboard's end-to-end tests: the shared control plane with plugboard's
//! CRDs installed, a loopback HTTP apparatus that records its calls ([`recorder`]), a stand-in
//! for the kubelet that makes apparatus pods "run" ([`kubelet`], shared with `plugboard dev`),
//! the operator as a separate process ([`operator`]), a client-registry service for the example
//! plugins ([`clients_api`]), Python plugins built with componentize-py ([`python`]), a real OCI
//! registry ([`registry`]), in-process operator scenarios ([`scenario`]), the plugins
//! built into WebAssembly components ([`plugins`]), and waiting on conditions with deadlines
//! (never sleeping as a means of synchronisation). The registry and the plugin builder live in
//! `plugboard-controlplane`, the kubelet in `plugboard::dev`, since `plugboard dev` uses them too.

use std::future::Future;
use std::time::{Duration, Instant};

pub use plugboard_controlplane::{TestEnv, TestNamespace};

pub mod clients_api;
pub use plugboard::dev::kubelet;
pub mod operator;
pub use plugboard_controlplane::{plugins, registry};
pub mod python;
pub mod recorder;
pub mod scenario;

/// The test environment of this test process, with plugboard's CRDs installed.
pub async fn env() -> TestEnv {
    match TestEnv::shared(plugboard::crd::crds).await {
        Ok(env) => env,
        // Tests cannot do anything without a control plane; show the whole cause chain.
        Err(e) => panic!("test control plane unavailable: {}", error_chain(&e)),
    }
}

/// Renders an error and its sources, one per line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str("\n  caused by: ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A condition was not met before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {seconds:.1} s waiting for {what}; last observed: {last}")]
pub struct Timeout {
    /// What was awaited.
    pub what: String,
    /// How long.
    pub seconds: f64,
    /// The last value the probe saw.
    pub last: String,
}

/// Polls `probe` until it returns `Ok(value)` or `timeout` passes. While the condition does
/// not hold yet the probe returns `Err` with a description of what it saw, which the timeout
/// error reports.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match probe().await {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if started.elapsed() > timeout {
            return Err(Timeout {
                what: what.to_owned(),
                seconds: started.elapsed().as_secs_f64(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
