//! The Helm chart (`charts/plugboard`) checked with a real `helm`, built from its Go module: it
//! lints; it renders what its values say, hardened, with defaults and with every value changed;
//! values that break `values.schema.json` fail; the rendered objects are accepted by the real
//! control plane (`helm install`, and the pod under the `restricted` Pod Security Standard);
//! and the operator, run with the token of the chart's ServiceAccount and nothing else, couples
//! a Plug that uses every feature — proving the chart's RBAC is enough.
//!
//! Its own test binary (and so its own control plane): installing the chart creates
//! cluster-scoped objects that the e2e tests' operators must not see.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests and their helpers fail by panicking"
)]

mod helm;
mod install;
mod rbac;
mod render;
