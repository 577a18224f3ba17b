//! The component ABI, hidden from hook authors: the bindings wit-bindgen generates from
//! `wit/0.1.0`, and the glue between their types and the SDK's.
//!
//! [`export!`](crate::export) expands to `export_glue!(Glue<T> ...)`, so a plugin crate sees
//! neither wit-bindgen nor the generated types: wit-bindgen's runtime is reached through
//! `plugboard_sdk::__private::wit_bindgen` (`runtime_path`), and its export macro is exported
//! from this crate (`pub_export_macro`). The bindings compile on every target (so native builds
//! and clippy check the glue); only `wasm32` exports them and calls the host imports.
#![allow(
    unsafe_code,
    reason = "wit-bindgen's generated ABI code (lifting and lowering through linear memory) is unsafe"
)]
#![allow(
    missing_docs,
    reason = "hidden module; its items are documented for the macro only"
)]

use std::fmt;
use std::marker::PhantomData;

pub use wit_bindgen;

use crate::Apparatus;
use crate::http::{Request, Response, SendError};
use crate::log::Level;
use crate::object::Object;
use crate::types::{ConfigInput, Coupling, HookError, Side, Values};

wit_bindgen::generate!({
    path: "../wit/0.1.0",
    world: "plugboard:apparatus/apparatus@0.1.0",
    runtime_path: "::plugboard_sdk::__private::wit_bindgen::rt",
    default_bindings_module: "::plugboard_sdk::__private",
    pub_export_macro: true,
    export_macro_name: "export_glue",
});

use exports::plugboard::apparatus::hooks::Guest;
use plugboard::apparatus::host as wit_host;
use plugboard::apparatus::types as wit;

/// The type [`export!`](crate::export) hands to wit-bindgen: it implements the generated
/// `Guest` trait for any [`Apparatus`] by converting the inputs, constructing the apparatus
/// with `Default` and converting the result.
pub struct Glue<T>(PhantomData<T>);

impl<T> fmt::Debug for Glue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Glue")
    }
}

/// What `export!` expands to on targets without component exports: a compile-time check that
/// the type can be exported.
pub fn check_apparatus<T: Apparatus + Default>() {}

impl<T: Apparatus + Default> Guest for Glue<T> {
    fn config(input: wit::ConfigInput) -> Result<wit::Values, wit::HookError> {
        call(|| {
            let input = config_input(input)?;
            T::default().config(input).map(values_to_wit)
        })
    }

    fn created(input: wit::Coupling) -> Result<(), wit::HookError> {
        call(|| T::default().created(coupling(input)?))
    }

    fn coupled(input: wit::Coupling) -> Result<(), wit::HookError> {
        call(|| T::default().coupled(coupling(input)?))
    }

    fn updated(input: wit::Coupling) -> Result<(), wit::HookError> {
        call(|| T::default().updated(coupling(input)?))
    }

    fn decoupled(input: wit::Coupling) -> Result<(), wit::HookError> {
        call(|| T::default().decoupled(coupling(input)?))
    }

    fn deleted(input: wit::Coupling) -> Result<(), wit::HookError> {
        call(|| T::default().deleted(coupling(input)?))
    }
}

/// Runs one hook call: makes panics visible first, then converts the error.
fn call<R>(hook: impl FnOnce() -> Result<R, HookError>) -> Result<R, wit::HookError> {
    #[cfg(target_arch = "wasm32")]
    install_panic_hook();
    hook().map_err(|e| match e {
        HookError::InvalidInput(m) => wit::HookError::InvalidInput(m),
        HookError::RetryLater(m) => wit::HookError::RetryLater(m),
        HookError::Failed(m) => wit::HookError::Failed(m),
    })
}

/// With `panic = "abort"` a panic is a bare `unreachable` trap and its message is lost; this
/// hook sends the message (with its location) to the operator's log before the trap.
#[cfg(target_arch = "wasm32")]
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            // One line, so log tools keep the message with its location.
            let location = info.location().map(|l| format!(" at {l}"));
            let message = info.payload_as_str().unwrap_or("(no message)");
            host_log(
                Level::Error,
                &format!("hook panicked{}: {message}", location.unwrap_or_default()),
            );
        }));
    });
}

fn side(side: wit::Side) -> Side {
    match side {
        wit::Side::Plug => Side::Plug,
        wit::Side::Socket => Side::Socket,
    }
}

fn values(values: wit::Values) -> Values {
    values.into_iter().collect()
}

fn values_to_wit(values: Values) -> wit::Values {
    values.into_iter().collect()
}

fn object(what: &str, json: &str) -> Result<Object, HookError> {
    Object::from_json_str(json)
        .map_err(|e| HookError::invalid_input(format!("the {what} the host sent is not JSON: {e}")))
}

fn config_input(input: wit::ConfigInput) -> Result<ConfigInput, HookError> {
    Ok(ConfigInput {
        side: side(input.side),
        plug: object("Plug", &input.plug)?,
        socket: object("Socket", &input.socket)?,
        plug_data: values(input.plug_data),
        socket_data: values(input.socket_data),
        vars: input.vars.map(values),
    })
}

fn coupling(input: wit::Coupling) -> Result<Coupling, HookError> {
    Ok(Coupling {
        side: side(input.side),
        plug: input.plug.map(|p| object("Plug", &p)).transpose()?,
        socket: input.socket.map(|s| object("Socket", &s)).transpose()?,
        plug_config: values(input.plug_config),
        socket_config: values(input.socket_config),
    })
}

/// Calls the host's `log` import.
#[cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "native builds log to the testing fake")
)]
pub(crate) fn host_log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => wit_host::Level::Trace,
        Level::Debug => wit_host::Level::Debug,
        Level::Info => wit_host::Level::Info,
        Level::Warn => wit_host::Level::Warn,
        Level::Error => wit_host::Level::Error,
    };
    wit_host::log(level, message);
}

/// Calls the host's `send` import.
#[cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "native builds send through the testing fake")
)]
pub(crate) fn host_send(request: Request) -> Result<Response, SendError> {
    let request = wit_host::Request {
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: request.body,
    };
    match wit_host::send(&request) {
        Ok(r) => Ok(Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }),
        Err(wit_host::SendError::Denied(m)) => Err(SendError::Denied(m)),
        Err(wit_host::SendError::Timeout) => Err(SendError::Timeout),
        Err(wit_host::SendError::TooLarge) => Err(SendError::TooLarge),
        Err(wit_host::SendError::Transport(m)) => Err(SendError::Transport(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Echo;

    impl Apparatus for Echo {
        fn config(&self, input: ConfigInput) -> Result<Values, HookError> {
            let mut out = input.owner_data().clone();
            out.insert("owner".into(), input.owner().key());
            Ok(out)
        }

        fn deleted(&self, coupling: Coupling) -> Result<(), HookError> {
            Err(HookError::retry_later(format!(
                "{} still in use",
                coupling.owner().map(Object::key).unwrap_or_default()
            )))
        }
    }

    #[test]
    fn glue_converts_inputs_and_results() {
        let out = <Glue<Echo> as Guest>::config(wit::ConfigInput {
            side: wit::Side::Socket,
            plug: r#"{"metadata":{"name":"p","namespace":"n"}}"#.into(),
            socket: r#"{"metadata":{"name":"s","namespace":"n"}}"#.into(),
            plug_data: vec![("a".into(), "1".into())],
            socket_data: vec![("b".into(), "2".into())],
            vars: None,
        });
        assert_eq!(
            out.ok(),
            Some(vec![
                ("b".to_owned(), "2".to_owned()),
                ("owner".to_owned(), "n/s".to_owned())
            ])
        );
    }

    #[test]
    fn glue_maps_errors_and_rejects_non_json_objects() {
        let input = wit::Coupling {
            side: wit::Side::Plug,
            plug: Some(r#"{"metadata":{"name":"p","namespace":"n"}}"#.into()),
            socket: None,
            plug_config: Vec::new(),
            socket_config: Vec::new(),
        };
        let err = <Glue<Echo> as Guest>::deleted(input.clone()).err();
        assert!(matches!(err, Some(wit::HookError::RetryLater(m)) if m == "n/p still in use"));

        let broken = wit::Coupling {
            plug: Some("{".into()),
            ..input
        };
        let err = <Glue<Echo> as Guest>::created(broken).err();
        assert!(
            matches!(err, Some(wit::HookError::InvalidInput(m)) if m.starts_with("the Plug the host sent is not JSON"))
        );
    }
}
