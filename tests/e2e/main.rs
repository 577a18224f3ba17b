//! End-to-end tests against a real control plane (see `plugboard-controlplane`). All tests in
//! this binary share one control plane; each works in its own namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests and their helpers fail by panicking"
)]

mod api;
mod coupling;
mod deferred;
mod egress;
mod engine;
mod engine_recheck;
mod engine_values;
mod examples;
mod fairness;
mod optin;
mod plan;
mod plugin;
mod pods;
mod rbac;
mod results;
mod sdk;
mod signatures;
mod status;
mod teardown;
mod wasm;
