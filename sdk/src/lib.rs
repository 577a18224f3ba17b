//! `plugboard-sdk`: write plugboard lifecycle hooks in Rust.
//!
//! A Plug's or a Socket's hooks can run in a WebAssembly component that plugboard pulls from an
//! OCI registry and runs in-process, sandboxed: a fresh instance per call, a deadline, a memory
//! cap, no filesystem, no environment, and no network except HTTP to the hosts the spec allows.
//! This crate is all a hook author depends on. Implement [`Apparatus`] (every hook has a
//! default), call [`export!`] once, and build the crate for `wasm32-wasip2`:
//!
//! ```
//! use plugboard_sdk::{Apparatus, ConfigInput, Coupling, HookError, Values, log};
//!
//! /// Gives every Plug a database named after it.
//! #[derive(Default)]
//! struct Databases;
//!
//! impl Apparatus for Databases {
//!     fn config(&self, input: ConfigInput) -> Result<Values, HookError> {
//!         let name = input.plug.name().replace('-', "_");
//!         if name.is_empty() {
//!             return Err(HookError::invalid_input("the Plug has no name"));
//!         }
//!         Ok(Values::from([("database".to_owned(), name)]))
//!     }
//!
//!     fn coupled(&self, coupling: Coupling) -> Result<(), HookError> {
//!         let plug = coupling.plug.as_ref().map(|p| p.key()).unwrap_or_default();
//!         log::info(format_args!("{plug} coupled"));
//!         Ok(())
//!     }
//! }
//!
//! plugboard_sdk::export!(Databases);
//! ```
//!
//! ```toml
//! # Cargo.toml of a plugin
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! plugboard-sdk = "0.1"
//! ```
//!
//! `cargo build --release --target wasm32-wasip2` then writes the component to
//! `target/wasm32-wasip2/release/<crate>.wasm`; it exports `plugboard:apparatus/hooks@0.1.0`
//! and imports `plugboard:apparatus/host@0.1.0` (the WIT contract in the repository's `wit/`).
//!
//! # Host services
//!
//! [`log`] writes to the operator's log, tagged with the Plug or Socket the call is for.
//! [`http::send`] makes an outbound HTTP request to a host the spec's `allowedHosts` lists.
//! Nothing else reaches outside the sandbox: `std::fs`, `std::env` and `std::net` see nothing or
//! fail. A panic logs its message through [`log`] and ends the call as a trap, which plugboard
//! reports as a bug in the component; return a [`HookError`] for failures you expect.
//!
//! # Errors
//!
//! Return a [`HookError`] for failures you expect; its kind decides what plugboard does next
//! (`InvalidInput`: Stalled until the spec or the inputs change; `RetryLater`: called again
//! after a backoff, not Stalled; `Failed`: Stalled with a Warning Event, called again after a
//! backoff). The table is on [`HookError`]. Hooks do not return results: as in the reference,
//! results come from the spec's `result` sources and `resultTemplate`, which see both configs.
//!
//! # HTTP mode
//!
//! With the feature `http-server`, `server::Server` serves the same [`Apparatus`] as an HTTP
//! apparatus over the reference's wire protocol — in an apparatus pod, or on a laptop with the
//! operator's debug endpoint pointed at it — so a team starts with a pod and moves to
//! WebAssembly without rewriting. The author guide (`sdk/README.md` in the repository) walks
//! through both.
//!
//! # Testing
//!
//! On any target other than `wasm32`, the host services are replaced by an in-memory fake and
//! [`testing::Harness`] calls the hooks with fixture inputs, so `cargo test` of a plugin needs no
//! WebAssembly toolchain:
//!
//! ```
//! # use plugboard_sdk::{Apparatus, ConfigInput, HookError, Values};
//! # #[derive(Default)]
//! # struct Databases;
//! # impl Apparatus for Databases {
//! #     fn config(&self, input: ConfigInput) -> Result<Values, HookError> {
//! #         Ok(Values::from([("database".to_owned(), input.plug.name().replace('-', "_"))]))
//! #     }
//! # }
//! use plugboard_sdk::testing::{self, Harness};
//! use plugboard_sdk::{Side, serde_json::json};
//!
//! let harness = Harness::new(Databases);
//! let input = ConfigInput::new(
//!     Side::Socket,
//!     testing::plug("shop", "web-app", json!({})),
//!     testing::socket("shop", "postgres", json!({})),
//! );
//! let config = harness.config(input).unwrap();
//! assert_eq!(config["database"], "web_app");
//! ```
#![deny(missing_docs)]

// wit-bindgen's generated code names the runtime through this crate's path (`runtime_path`),
// which must resolve inside this crate too.
extern crate self as plugboard_sdk;

#[doc(hidden)]
#[path = "bindings.rs"]
pub mod __private;
mod apparatus;
mod host;
pub mod http;
pub mod log;
mod object;
#[cfg(all(feature = "http-server", not(target_arch = "wasm32")))]
pub mod server;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;
mod version;

pub use apparatus::Apparatus;
pub use object::Object;
pub use types::{ConfigInput, Coupling, HookError, HookResult, Side, Values};
#[doc(hidden)]
pub use version::sdk_version_bytes as __private_sdk_version_bytes;
pub use version::{SDK_VERSION, SDK_VERSION_SECTION};

/// The JSON library [`Object`] is built on, re-exported so plugins need no dependency of their
/// own to read objects or write fixtures (`plugboard_sdk::serde_json::json!`).
pub use serde_json;

/// The version of the WIT contract (`plugboard:apparatus`) this SDK implements.
pub const WIT_VERSION: &str = "0.1.0";

/// Exports a type as the component's hooks.
///
/// The type implements [`Apparatus`] and [`Default`]; each hook call constructs it with
/// `Default::default()` (plugboard runs every call in a fresh instance, so nothing survives from
/// one call to the next anyway). Call the macro once, at the top level of the plugin crate:
///
/// ```
/// # use plugboard_sdk::Apparatus;
/// #[derive(Default)]
/// struct Noop;
///
/// impl Apparatus for Noop {}
///
/// plugboard_sdk::export!(Noop);
/// ```
///
/// On `wasm32` this emits the component's exports; on other targets it only checks the type, so
/// the same crate builds and tests natively.
#[macro_export]
macro_rules! export {
    ($apparatus:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::__sdk_version_section!();
            type __PlugboardApparatus = $crate::__private::Glue<$apparatus>;
            $crate::__private::export_glue!(
                __PlugboardApparatus with_types_in $crate::__private
            );
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = $crate::__private::check_apparatus::<$apparatus>;
    };
}
