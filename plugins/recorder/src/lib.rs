//! `recorder`: an apparatus that shows, from the operator's side, which hooks ran with which
//! inputs.
//!
//! - `config` returns keys describing its input (see [`Recorder::config`]); they end up in the
//!   calling side's config, where a test reads them from the coupled configs.
//! - Every hook (`config` included) logs one line through the host,
//!   `hook <name> side=<side> plug=<ns/name> socket=<ns/name>`, with `-` for an object the hook
//!   does not see; the line lands in the operator's log tagged with the Plug or Socket.
//!
//! Every hook succeeds.

use plugboard_sdk::http::{self, Request};
use plugboard_sdk::{
    Apparatus, ConfigInput, Coupling, HookError, HookResult, Object, Side, Values, log, serde_json,
};

/// The recorder apparatus.
#[derive(Debug, Default)]
pub struct Recorder;

/// Prefix of every key `config` returns.
pub const PREFIX: &str = "recorder.";

impl Recorder {
    fn record(hook: &str, side: Side, plug: Option<&Object>, socket: Option<&Object>) {
        log::info(format_args!(
            "hook {hook} side={side} plug={} socket={}",
            key(plug),
            key(socket)
        ));
    }
}

/// When the owner's `spec.data.report` holds a URL, POSTs what the hook received there (JSON:
/// `hook`, `side`, `plug` and `socket` as `namespace/name`, `plugConfig`, `socketConfig`), so a
/// test can see from outside which hooks ran, in which order, with which inputs. The URL's host
/// must be in the spec's `allowedHosts`.
fn report(hook: &str, c: &Coupling) -> HookResult {
    let Some(url) = c.owner().and_then(|o| o.get_str("spec.data.report")) else {
        return Ok(());
    };
    let body = serde_json::json!({
        "hook": hook,
        "side": c.side.to_string(),
        "plug": key(c.plug.as_ref()),
        "socket": key(c.socket.as_ref()),
        "plugConfig": c.plug_config,
        "socketConfig": c.socket_config,
    });
    let response = http::send(Request {
        method: "POST".to_owned(),
        url: url.to_owned(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: Some(body.to_string().into_bytes()),
    })?;
    if response.status >= 400 {
        return Err(HookError::failed(format!(
            "report to {url} failed with status {}",
            response.status
        )));
    }
    Ok(())
}

fn key(object: Option<&Object>) -> String {
    object.map_or_else(|| "-".to_owned(), Object::key)
}

impl Apparatus for Recorder {
    /// Returns:
    ///
    /// - `recorder.calls`: `config` (present whenever this hook produced the config);
    /// - `recorder.side`: `plug` or `socket`;
    /// - `recorder.plug`, `recorder.socket`: `namespace/name` of each object;
    /// - `recorder.plugData.<key>`, `recorder.socketData.<key>`: each side's data, echoed;
    /// - `recorder.vars.<key>`: the calling side's vars, when it has any.
    ///
    /// Data is echoed verbatim, so do not give the recorder secrets.
    fn config(&self, input: ConfigInput) -> HookResult<Values> {
        Self::record("config", input.side, Some(&input.plug), Some(&input.socket));
        let mut out = Values::from([
            (format!("{PREFIX}calls"), "config".to_owned()),
            (format!("{PREFIX}side"), input.side.to_string()),
            (format!("{PREFIX}plug"), input.plug.key()),
            (format!("{PREFIX}socket"), input.socket.key()),
        ]);
        let echoes = [
            ("plugData", Some(&input.plug_data)),
            ("socketData", Some(&input.socket_data)),
            ("vars", input.vars.as_ref()),
        ];
        for (section, values) in echoes {
            for (k, v) in values.into_iter().flatten() {
                out.insert(format!("{PREFIX}{section}.{k}"), v.clone());
            }
        }
        Ok(out)
    }

    fn created(&self, c: Coupling) -> HookResult {
        Self::record("created", c.side, c.plug.as_ref(), c.socket.as_ref());
        report("created", &c)
    }

    fn coupled(&self, c: Coupling) -> HookResult {
        Self::record("coupled", c.side, c.plug.as_ref(), c.socket.as_ref());
        report("coupled", &c)
    }

    fn updated(&self, c: Coupling) -> HookResult {
        Self::record("updated", c.side, c.plug.as_ref(), c.socket.as_ref());
        report("updated", &c)
    }

    fn decoupled(&self, c: Coupling) -> HookResult {
        Self::record("decoupled", c.side, c.plug.as_ref(), c.socket.as_ref());
        report("decoupled", &c)
    }

    fn deleted(&self, c: Coupling) -> HookResult {
        Self::record("deleted", c.side, c.plug.as_ref(), c.socket.as_ref());
        report("deleted", &c)
    }
}

plugboard_sdk::export!(Recorder);

#[cfg(test)]
mod tests {
    use super::*;
    use plugboard_sdk::serde_json::json;
    use plugboard_sdk::testing::{self, Harness};

    fn plug() -> Object {
        testing::plug("apps", "web", json!({"socket": {"name": "db"}}))
    }

    fn socket() -> Object {
        testing::socket("data", "db", json!({}))
    }

    #[test]
    fn config_describes_its_input() {
        let h = Harness::new(Recorder);
        let input = ConfigInput::new(Side::Plug, plug(), socket())
            .with_plug_data("size", "small")
            .with_socket_data("engine", "postgres")
            .with_var("region", "eu");

        let config = h.config(input).unwrap();

        let expected = [
            ("recorder.calls", "config"),
            ("recorder.side", "plug"),
            ("recorder.plug", "apps/web"),
            ("recorder.socket", "data/db"),
            ("recorder.plugData.size", "small"),
            ("recorder.socketData.engine", "postgres"),
            ("recorder.vars.region", "eu"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(config, Values::from(expected));
        assert_eq!(
            h.log_messages(),
            ["hook config side=plug plug=apps/web socket=data/db"]
        );
    }

    #[test]
    fn config_without_vars_has_no_vars_keys() {
        let h = Harness::new(Recorder);
        let config = h
            .config(ConfigInput::new(Side::Socket, plug(), socket()))
            .unwrap();
        assert_eq!(config["recorder.side"], "socket");
        assert!(!config.keys().any(|k| k.starts_with("recorder.vars.")));
    }

    #[test]
    fn lifecycle_hooks_log_one_line_each_and_succeed() {
        let h = Harness::new(Recorder);
        let created = Coupling::new(Side::Socket).with_socket(socket());
        let coupled = Coupling::new(Side::Plug)
            .with_plug(plug())
            .with_socket(socket());
        let orphaned = Coupling::new(Side::Plug).with_plug(plug());

        h.created(created.clone()).unwrap();
        h.coupled(coupled.clone()).unwrap();
        h.updated(coupled).unwrap();
        h.decoupled(orphaned).unwrap();
        h.deleted(created).unwrap();

        assert_eq!(
            h.log_messages(),
            [
                "hook created side=socket plug=- socket=data/db",
                "hook coupled side=plug plug=apps/web socket=data/db",
                "hook updated side=plug plug=apps/web socket=data/db",
                "hook decoupled side=plug plug=apps/web socket=-",
                "hook deleted side=socket plug=- socket=data/db",
            ]
        );
        assert!(h.logs().iter().all(|l| l.level == log::Level::Info));
    }

    #[test]
    fn lifecycle_hooks_report_their_inputs_when_asked() {
        let mut h = Harness::new(Recorder);
        h.respond(
            "POST",
            "http://reports.example/hooks",
            http::Response {
                status: 200,
                headers: Vec::new(),
                body: Vec::new(),
            },
        );
        let socket = testing::socket(
            "data",
            "db",
            json!({"data": {"report": "http://reports.example/hooks"}}),
        );
        let coupling = Coupling::new(Side::Socket)
            .with_plug(plug())
            .with_socket(socket)
            .with_plug_config("database", "app");
        h.coupled(coupling).unwrap();
        let requests = h.requests();
        assert_eq!(requests.len(), 1);
        let body: serde_json::Value =
            serde_json::from_slice(requests[0].body.as_deref().unwrap()).unwrap();
        assert_eq!(body["hook"], "coupled");
        assert_eq!(body["side"], "socket");
        assert_eq!(body["plug"], "apps/web");
        assert_eq!(body["plugConfig"]["database"], "app");
    }
}
