//! A real Kubernetes control plane for plugboard's end-to-end tests and for `plugboard dev`.
//!
//! There is no container runtime on our build machines, so instead of kind or k3d this runs the
//! real `etcd`, `kube-apiserver` and `kube-controller-manager` as plain processes (what envtest
//! does), built from their Go modules at the pinned [`KUBERNETES_VERSION`] and cached so they
//! build once per machine ([`binaries`]). The API server runs with RBAC, service-account token
//! signing and a generated CA ([`pki`]); the controller manager runs the garbage collector and
//! the namespace and service-account controllers, so cleanup and default ServiceAccounts behave
//! as on a real cluster. There is no scheduler and no kubelet: pods never run.
//!
//! [`ControlPlane::start`] starts one; [`TestEnv`] shares one per test process, installs CRDs
//! and hands each test a client and a fresh namespace. Every process is supervised through a
//! pipe from this process, so they stop when it exits, even when it crashes.
//!
//! Beside it: a loopback OCI [`registry`] (the CNCF distribution server, also built from its Go
//! module) and the builder of this source tree's [`plugins`] into WebAssembly components, so
//! that the tests and `plugboard dev` need nothing but Rust and Go.

pub mod binaries;
mod cluster;
mod env;
mod error;
pub mod gotools;
pub mod pki;
pub mod plugins;
pub mod process;
pub mod registry;

pub use cluster::{ControlPlane, ControlPlaneOptions, free_port};
pub use env::{TestEnv, TestNamespace, install_crds};
pub use error::Error;

/// The Kubernetes version the control plane is built at.
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// The etcd version that Kubernetes version requires.
pub const ETCD_VERSION: &str = "v3.6.8";
