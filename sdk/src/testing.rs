//! Testing hooks natively, without a WebAssembly toolchain or a cluster.
//!
//! On targets other than `wasm32` the host services are an in-memory fake: [`Harness`] calls an
//! [`Apparatus`]'s hooks, captures what they log and answers their HTTP requests from a script.
//! [`plug`] and [`socket`] build the objects plugboard would send.
//!
//! ```
//! use plugboard_sdk::http::{self, Request, Response};
//! use plugboard_sdk::testing::{self, Harness};
//! use plugboard_sdk::{Apparatus, Coupling, HookError, Side, log, serde_json::json};
//!
//! #[derive(Default)]
//! struct Notifier;
//!
//! impl Apparatus for Notifier {
//!     fn coupled(&self, coupling: Coupling) -> Result<(), HookError> {
//!         let url = coupling.owner_config().get("webhook").cloned().unwrap_or_default();
//!         let response = http::send(Request::post(url, "coupled"))?;
//!         log::info(format_args!("webhook answered {}", response.status));
//!         Ok(())
//!     }
//! }
//!
//! let mut harness = Harness::new(Notifier);
//! harness.respond("POST", "https://hooks.example.com/x", Response::new(204));
//! let coupling = Coupling::new(Side::Plug)
//!     .with_plug(testing::plug("shop", "app", json!({})))
//!     .with_socket(testing::socket("shop", "db", json!({})))
//!     .with_plug_config("webhook", "https://hooks.example.com/x");
//!
//! harness.coupled(coupling.clone()).unwrap();
//! assert_eq!(harness.log_messages(), ["webhook answered 204"]);
//! assert_eq!(harness.requests()[0].body.as_deref(), Some(&b"coupled"[..]));
//!
//! // A URL the script does not know is denied, as a host not in `allowedHosts` would be.
//! let other = coupling.with_plug_config("webhook", "https://elsewhere.example.com/");
//! assert!(matches!(harness.coupled(other), Err(HookError::InvalidInput(_))));
//! ```

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use serde_json::{Value, json};

use crate::Apparatus;
use crate::http::{Request, Response, SendError};
use crate::log::Level;
use crate::object::Object;
use crate::types::{ConfigInput, Coupling, HookResult, Values};

/// One line a hook logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its severity.
    pub level: Level,
    /// Its text.
    pub message: String,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.level, self.message)
    }
}

#[derive(Debug, Default)]
struct FakeHost {
    logs: Vec<LogLine>,
    requests: Vec<Request>,
    /// `(method, url, answer)`; the last matching entry wins.
    script: Vec<(String, String, Result<Response, SendError>)>,
}

impl FakeHost {
    fn answer(&self, request: &Request) -> Result<Response, SendError> {
        self.script
            .iter()
            .rev()
            .find(|(method, url, _)| {
                method.eq_ignore_ascii_case(&request.method) && *url == request.url
            })
            .map(|(_, _, answer)| answer.clone())
            .unwrap_or_else(|| {
                Err(SendError::Denied(format!(
                    "{} {} is not scripted in this test harness",
                    request.method, request.url
                )))
            })
    }
}

thread_local! {
    /// The fake host of the harness whose hook is running on this thread.
    static CURRENT: RefCell<Option<Rc<RefCell<FakeHost>>>> = const { RefCell::new(None) };
}

/// Restores the previous fake host when a hook call ends, also when it panics.
struct Enter(Option<Rc<RefCell<FakeHost>>>);

impl Enter {
    fn new(host: &Rc<RefCell<FakeHost>>) -> Self {
        Enter(CURRENT.with(|c| c.replace(Some(Rc::clone(host)))))
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

fn current() -> Option<Rc<RefCell<FakeHost>>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The native `log`: into the running harness, else to stderr.
pub(crate) fn fake_log(level: Level, message: &str) {
    match current() {
        Some(host) => host.borrow_mut().logs.push(LogLine {
            level,
            message: message.to_owned(),
        }),
        None => eprintln!("{level}: {message}"),
    }
}

/// The native `send`: answered by the running harness's script, else denied.
pub(crate) fn fake_send(request: Request) -> Result<Response, SendError> {
    let Some(host) = current() else {
        return Err(SendError::Denied(
            "outbound HTTP goes through the plugboard host, and there is none here".to_owned(),
        ));
    };
    let answer = host.borrow().answer(&request);
    host.borrow_mut().requests.push(request);
    answer
}

/// Calls an [`Apparatus`]'s hooks natively with a fake host: logs are captured and HTTP
/// requests are answered from a script (unscripted requests are
/// [denied](SendError::Denied), as a host not in `allowedHosts` would be).
///
/// Hooks run on the calling thread, directly: a panic in a hook panics the test.
pub struct Harness<A> {
    apparatus: A,
    host: Rc<RefCell<FakeHost>>,
}

impl<A> fmt::Debug for Harness<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("host", &self.host.borrow())
            .finish_non_exhaustive()
    }
}

impl<A: Apparatus> Harness<A> {
    /// A harness around this apparatus, with no log lines and an empty HTTP script.
    pub fn new(apparatus: A) -> Self {
        Self {
            apparatus,
            host: Rc::default(),
        }
    }

    /// The apparatus under test.
    pub fn apparatus(&self) -> &A {
        &self.apparatus
    }

    /// Answers requests with this method (compared case-insensitively) and exact URL with
    /// `response`, until a later script entry for the same request replaces it.
    pub fn respond(&mut self, method: &str, url: &str, response: Response) -> &mut Self {
        self.script(method, url, Ok(response))
    }

    /// Answers requests with this method and exact URL with an error.
    pub fn fail(&mut self, method: &str, url: &str, error: SendError) -> &mut Self {
        self.script(method, url, Err(error))
    }

    fn script(
        &mut self,
        method: &str,
        url: &str,
        answer: Result<Response, SendError>,
    ) -> &mut Self {
        self.host
            .borrow_mut()
            .script
            .push((method.to_owned(), url.to_owned(), answer));
        self
    }

    /// Runs the `config` hook.
    pub fn config(&self, input: ConfigInput) -> HookResult<Values> {
        let _enter = Enter::new(&self.host);
        self.apparatus.config(input)
    }

    /// Runs the `created` hook.
    pub fn created(&self, coupling: Coupling) -> HookResult {
        let _enter = Enter::new(&self.host);
        self.apparatus.created(coupling)
    }

    /// Runs the `coupled` hook.
    pub fn coupled(&self, coupling: Coupling) -> HookResult {
        let _enter = Enter::new(&self.host);
        self.apparatus.coupled(coupling)
    }

    /// Runs the `updated` hook.
    pub fn updated(&self, coupling: Coupling) -> HookResult {
        let _enter = Enter::new(&self.host);
        self.apparatus.updated(coupling)
    }

    /// Runs the `decoupled` hook.
    pub fn decoupled(&self, coupling: Coupling) -> HookResult {
        let _enter = Enter::new(&self.host);
        self.apparatus.decoupled(coupling)
    }

    /// Runs the `deleted` hook.
    pub fn deleted(&self, coupling: Coupling) -> HookResult {
        let _enter = Enter::new(&self.host);
        self.apparatus.deleted(coupling)
    }

    /// Every line logged so far, oldest first.
    pub fn logs(&self) -> Vec<LogLine> {
        self.host.borrow().logs.clone()
    }

    /// The text of every line logged so far, oldest first.
    pub fn log_messages(&self) -> Vec<String> {
        self.host
            .borrow()
            .logs
            .iter()
            .map(|l| l.message.clone())
            .collect()
    }

    /// Every HTTP request sent so far, oldest first, answered or not.
    pub fn requests(&self) -> Vec<Request> {
        self.host.borrow().requests.clone()
    }

    /// Forgets the logged lines and sent requests; the HTTP script stays.
    pub fn clear(&mut self) {
        let mut host = self.host.borrow_mut();
        host.logs.clear();
        host.requests.clear();
    }
}

/// A Plug as plugboard sends it: `apiVersion`, `kind`, `metadata` (name, namespace, a uid
/// derived from both, generation 1) and this `spec`.
pub fn plug(namespace: &str, name: &str, spec: Value) -> Object {
    object("Plug", namespace, name, spec)
}

/// A Socket as plugboard sends it (see [`plug`]).
pub fn socket(namespace: &str, name: &str, spec: Value) -> Object {
    object("Socket", namespace, name, spec)
}

fn object(kind: &str, namespace: &str, name: &str, spec: Value) -> Object {
    Object::new(json!({
        "apiVersion": "plugboard.dev/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": fixture_uid(kind, namespace, name),
            "generation": 1,
        },
        "spec": spec,
    }))
}

/// A stable UUID-shaped uid, so fixtures compare equal across runs.
fn fixture_uid(kind: &str, namespace: &str, name: &str) -> String {
    // FNV-1a, twice with different offsets: a few lines, no dependency, and good enough to
    // tell fixtures apart.
    let fnv = |offset: u64| {
        [kind, namespace, name]
            .iter()
            .flat_map(|part| part.bytes().chain([0]))
            .fold(offset, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    };
    let (high, low) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xfff,
        low >> 52,
        low & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{HookError, Side};
    use crate::{http, log};

    #[derive(Default)]
    struct Fetcher;

    impl Apparatus for Fetcher {
        fn created(&self, coupling: Coupling) -> HookResult {
            let url = coupling
                .owner()
                .and_then(|o| o.get_str("spec.url"))
                .unwrap_or_default()
                .to_owned();
            log::debug(format_args!("fetching {url}"));
            let response = http::send(Request::get(url))?;
            log::info(format_args!("status {}", response.status));
            Ok(())
        }

        fn deleted(&self, _: Coupling) -> HookResult {
            panic!("deleted is not implemented");
        }
    }

    fn created(url: &str) -> Coupling {
        Coupling::new(Side::Plug).with_plug(plug("ns", "p", json!({ "url": url })))
    }

    #[test]
    fn scripted_requests_are_answered_and_recorded() {
        let mut h = Harness::new(Fetcher);
        h.respond("get", "http://a.example/", Response::new(200))
            .fail("GET", "http://b.example/", SendError::Timeout);

        assert_eq!(h.created(created("http://a.example/")), Ok(()));
        assert_eq!(
            h.logs(),
            [
                LogLine {
                    level: Level::Debug,
                    message: "fetching http://a.example/".into()
                },
                LogLine {
                    level: Level::Info,
                    message: "status 200".into()
                },
            ]
        );
        assert!(matches!(
            h.created(created("http://b.example/")),
            Err(HookError::RetryLater(_))
        ));
        assert!(matches!(
            h.created(created("http://c.example/")),
            Err(HookError::InvalidInput(m)) if m.contains("not scripted")
        ));
        assert_eq!(h.requests().len(), 3);

        h.clear();
        assert!(h.logs().is_empty() && h.requests().is_empty());
    }

    #[test]
    fn later_script_entries_replace_earlier_ones() {
        let mut h = Harness::new(Fetcher);
        h.respond("GET", "http://a.example/", Response::new(500))
            .respond("GET", "http://a.example/", Response::new(201));
        h.created(created("http://a.example/")).unwrap();
        assert_eq!(
            h.log_messages().last().map(String::as_str),
            Some("status 201")
        );
    }

    #[test]
    fn a_panicking_hook_leaves_no_harness_behind() {
        let h = Harness::new(Fetcher);
        let panicked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.deleted(created("x"))));
        assert!(panicked.is_err());
        assert!(current().is_none());
        assert!(matches!(
            http::send(Request::get("http://a.example/")),
            Err(SendError::Denied(_))
        ));
    }

    #[test]
    fn fixtures_look_like_what_plugboard_sends() {
        let p = plug("shop", "app", json!({"socket": {"name": "db"}}));
        assert_eq!(p.kind(), "Plug");
        assert_eq!(p.key(), "shop/app");
        assert_eq!(p.get_str("spec.socket.name"), Some("db"));
        assert_eq!(p.uid().len(), 36);
        assert_eq!(p.uid(), plug("shop", "app", json!({})).uid());
        assert_ne!(p.uid(), socket("shop", "app", json!({})).uid());
    }
}
