//! `adversary`: one component that misbehaves on request, so tests can prove that plugboard's
//! sandbox holds and that every kind of failure ends as a clear condition.
//!
//! # Instructions
//!
//! The adversary reads string keys from the calling side's data:
//!
//! - in `config`, from the calling side's data as the hook receives it (`plug-data` on the Plug
//!   side, `socket-data` on the Socket side: inline `spec.data` merged with its ConfigMap and
//!   Secret sources);
//! - in `created`, `coupled`, `updated`, `decoupled` and `deleted`, from the owner's object:
//!   the inline `spec.data` of the Plug (Plug side) or Socket (Socket side). Lifecycle hooks do
//!   not receive data, so ConfigMap and Secret sources are not seen there.
//!
//! | key | meaning |
//! | --- | --- |
//! | `mode` | what to do, see below; missing means `ok` |
//! | `hooks` | comma-separated hooks to misbehave in (`config,coupled`); missing means all, other hooks behave |
//! | `path` | `fs`: the file to read (default `/etc/passwd`) |
//! | `var` | `env`: the environment variable to read (default `HOME`) |
//! | `addr` | `socket`: the IPv4 `address:port` to connect to (default `127.0.0.1:80`) |
//! | `url` | `http`: the URL to `GET` (required) |
//! | `megabytes` | `flood`: how much to write to each of stdout, stderr and the host log (default 4); `hog`: how much to allocate (default 1024) |
//! | `message` | `invalid-input`, `retry-later`, `failed`: the error's message (default: the mode's name) |
//! | `report` | a URL to `POST` `{"hook": "<hook>", "mode": "<mode>"}` to through the host's `send` before misbehaving, so a test counts the calls (its host must be in `allowedHosts`; a failed report is ignored) |
//!
//! # Modes
//!
//! Modes that do not end the call return
//! `Err(Failed("<mode>: <what happened>"))`, so the outcome is the message of the condition
//! plugboard sets (and is also logged at `warn`). A sandbox that holds shows a refusal there,
//! for example `fs: open /etc/passwd: ...` or `socket: connect 127.0.0.1:80: ...`.
//!
//! | mode | does | expected in plugboard |
//! | --- | --- | --- |
//! | `ok` | nothing; `config` returns no keys | success |
//! | `spin` | loops forever | the call's deadline stops it |
//! | `hog` | allocates `megabytes` MiB (1 GiB) infallibly and touches every page | the memory cap makes the allocation fail, which traps; below the cap, `hog: allocated and touched ...` |
//! | `hog-try` | tries to reserve 1 GiB (fallible), touches it if it got it | `hog-try: reserve 1 GiB: ...` (refused) |
//! | `panic` | panics | a trap; the panic message is in the operator's log |
//! | `trap` | executes `unreachable` | a trap |
//! | `flood` | writes `megabytes` MiB to stdout and to stderr, and as many 1 KiB lines to the host log | output discarded, log bounded; `flood: ...` reports what the writes returned |
//! | `fs` | reads `path` | `fs: open /etc/passwd: ...` (no filesystem) |
//! | `env` | reads `var` and counts the environment | `env: HOME is not set (0 variables visible)` |
//! | `socket` | opens a TCP connection to `addr` through `wasi:sockets` | `socket: ...` an error (no network) |
//! | `http` | `GET url` through the host's `send` | the status, or `denied` unless the spec allows the host |
//! | `invalid-input` | returns `Err(InvalidInput(message))` | Stalled, and not called again until the spec or the inputs change |
//! | `retry-later` | returns `Err(RetryLater(message))` | not Stalled; called again after a backoff |
//! | `failed` | returns `Err(Failed(message))` | Stalled, a Warning Event, and called again after a backoff |
//!
//! An unknown mode is `Err(InvalidInput)`.

use std::io::{Read as _, Write};

use plugboard_sdk::http::{self, Request};
use plugboard_sdk::{Apparatus, ConfigInput, Coupling, HookError, HookResult, Values, log};

/// The adversary apparatus.
#[derive(Debug, Default)]
pub struct Adversary;

/// What the adversary does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Behave.
    Ok,
    /// Loop forever.
    Spin,
    /// Allocate 1 GiB infallibly and touch it.
    Hog,
    /// Try to reserve 1 GiB and touch it if that worked.
    HogTry,
    /// Panic.
    Panic,
    /// Execute `unreachable`.
    Trap,
    /// Write megabytes to stdout, stderr and the host log.
    Flood,
    /// Read a file.
    Fs,
    /// Read an environment variable.
    Env,
    /// Open a TCP connection.
    Socket,
    /// Send an HTTP request through the host.
    Http,
    /// Return `HookError::InvalidInput`.
    InvalidInput,
    /// Return `HookError::RetryLater`.
    RetryLater,
    /// Return `HookError::Failed`.
    Failed,
}

impl Mode {
    /// Every mode, by its name in the `mode` key.
    pub const ALL: [(&'static str, Mode); 14] = [
        ("ok", Mode::Ok),
        ("spin", Mode::Spin),
        ("hog", Mode::Hog),
        ("hog-try", Mode::HogTry),
        ("panic", Mode::Panic),
        ("trap", Mode::Trap),
        ("flood", Mode::Flood),
        ("fs", Mode::Fs),
        ("env", Mode::Env),
        ("socket", Mode::Socket),
        ("http", Mode::Http),
        ("invalid-input", Mode::InvalidInput),
        ("retry-later", Mode::RetryLater),
        ("failed", Mode::Failed),
    ];

    fn parse(name: &str) -> HookResult<Mode> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, mode)| *mode)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
                HookError::invalid_input(format!(
                    "unknown adversary mode `{name}`; use one of {}",
                    names.join(", ")
                ))
            })
    }
}

const GIB: usize = 1 << 30;
const MIB: usize = 1 << 20;

/// Runs the instructions in `keys` for `hook`.
fn misbehave(hook: &str, keys: &Values) -> HookResult {
    let mode = Mode::parse(keys.get("mode").map_or("ok", String::as_str))?;
    let selected = keys
        .get("hooks")
        .is_none_or(|hooks| hooks.split(',').any(|h| h.trim() == hook));
    if mode == Mode::Ok || !selected {
        return Ok(());
    }
    let param = |key: &str, default: &'static str| -> String {
        keys.get(key).cloned().unwrap_or_else(|| default.to_owned())
    };
    if let Some(url) = keys.get("report") {
        report(url, hook, keys.get("mode").map_or("ok", String::as_str));
    }
    let message = |name: &'static str| param("message", name);
    let outcome = match mode {
        Mode::InvalidInput => return Err(HookError::invalid_input(message("invalid-input"))),
        Mode::RetryLater => return Err(HookError::retry_later(message("retry-later"))),
        Mode::Failed => return Err(HookError::failed(message("failed"))),
        Mode::Ok => return Ok(()),
        Mode::Spin => spin(),
        Mode::Hog => hog(&param("megabytes", "1024"))?,
        Mode::HogTry => hog_try(),
        Mode::Panic => panic!("adversary: panic in {hook}, as instructed"),
        Mode::Trap => trap(),
        Mode::Flood => flood(&param("megabytes", "4"))?,
        Mode::Fs => read_file(&param("path", "/etc/passwd")),
        Mode::Env => read_env(&param("var", "HOME")),
        Mode::Socket => connect(&param("addr", "127.0.0.1:80"))?,
        Mode::Http => {
            let url = keys
                .get("url")
                .ok_or_else(|| HookError::invalid_input("mode `http` needs a `url` key"))?;
            get(url)
        }
    };
    log::warn(format_args!("adversary {hook}: {outcome}"));
    Err(HookError::failed(outcome))
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Touches one byte per 64 KiB (a WebAssembly page), enough to make every page real.
fn touch(memory: &mut [u8]) {
    // Every page, so that all of it is resident.
    for byte in memory.iter_mut().step_by(4 * 1024) {
        *byte = std::hint::black_box(1);
    }
}

fn hog(megabytes: &str) -> HookResult<String> {
    let megabytes: usize = megabytes.parse().map_err(|_| {
        HookError::invalid_input(format!("`megabytes` must be a number, not `{megabytes}`"))
    })?;
    // An infallible allocation: when it fails, the allocation error handler aborts (a trap).
    let mut memory = vec![0u8; megabytes.saturating_mul(1 << 20)];
    touch(&mut memory);
    Ok(format!("hog: allocated and touched {} bytes", memory.len()))
}

fn hog_try() -> String {
    let mut memory: Vec<u8> = Vec::new();
    match memory.try_reserve_exact(GIB) {
        Err(e) => format!("hog-try: reserve 1 GiB: {e}"),
        Ok(()) => {
            memory.resize(GIB, 0);
            touch(&mut memory);
            format!("hog-try: allocated and touched {} bytes", memory.len())
        }
    }
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn flood(megabytes: &str) -> HookResult<String> {
    let megabytes: usize = megabytes.parse().map_err(|_| {
        HookError::invalid_input(format!("`megabytes` must be a number, not `{megabytes}`"))
    })?;
    Ok(flood_into(
        megabytes,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    ))
}

fn flood_into(megabytes: usize, stdout: &mut dyn Write, stderr: &mut dyn Write) -> String {
    let chunk = vec![b'x'; MIB];
    let write = |out: &mut dyn Write| -> String {
        for written in 0..megabytes {
            if let Err(e) = out.write_all(&chunk) {
                return format!("failed after {written} MiB: {e}");
            }
        }
        match out.flush() {
            Ok(()) => format!("{megabytes} MiB written"),
            Err(e) => format!("{megabytes} MiB written, flush failed: {e}"),
        }
    };
    let stdout = write(stdout);
    let stderr = write(stderr);
    let line = "x".repeat(1024);
    let lines = megabytes * 1024;
    for _ in 0..lines {
        log::info(&line);
    }
    format!("flood: stdout {stdout}; stderr {stderr}; {lines} log lines sent")
}

fn read_file(path: &str) -> String {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return format!("fs: open {path}: {e}"),
    };
    let mut contents = Vec::new();
    match file.read_to_end(&mut contents) {
        Ok(n) => format!("fs: read {n} bytes from {path}"),
        Err(e) => format!("fs: read {path}: {e}"),
    }
}

fn read_env(var: &str) -> String {
    let visible = std::env::vars_os().count();
    match std::env::var(var) {
        Ok(value) => format!("env: {var}={value} ({visible} variables visible)"),
        Err(e) => format!("env: {var} is not set: {e} ({visible} variables visible)"),
    }
}

fn connect(addr: &str) -> HookResult<String> {
    let parsed: std::net::SocketAddrV4 = addr.parse().map_err(|e| {
        HookError::invalid_input(format!("`addr` must be an IPv4 address:port: {e}"))
    })?;
    Ok(match tcp_connect(parsed) {
        Ok(()) => format!("socket: connected to {addr}"),
        Err(e) => format!("socket: connect {addr}: {e}"),
    })
}

/// Connects through `wasi:sockets` directly: `std::net` does not link with the preview1-era
/// wasi-libc some toolchains ship, and the imports say exactly what the component asks for.
#[cfg(target_arch = "wasm32")]
fn tcp_connect(addr: std::net::SocketAddrV4) -> Result<(), String> {
    use wasip2::sockets::network::{
        ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress,
    };
    use wasip2::sockets::{instance_network, tcp_create_socket};

    let network = instance_network::instance_network();
    let socket = tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)
        .map_err(|e| format!("create socket: {e:?}"))?;
    let [a, b, c, d] = addr.ip().octets();
    let remote = IpSocketAddress::Ipv4(Ipv4SocketAddress {
        port: addr.port(),
        address: (a, b, c, d),
    });
    socket
        .start_connect(&network, remote)
        .map_err(|e| format!("start connect: {e:?}"))?;
    let ready = socket.subscribe();
    loop {
        match socket.finish_connect() {
            Ok(_streams) => return Ok(()),
            Err(ErrorCode::WouldBlock) => ready.block(),
            Err(e) => return Err(format!("finish connect: {e:?}")),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn tcp_connect(addr: std::net::SocketAddrV4) -> Result<(), String> {
    std::net::TcpStream::connect_timeout(&addr.into(), std::time::Duration::from_secs(5))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Tells `url` that `hook` ran in `mode`; a failure is only logged.
fn report(url: &str, hook: &str, mode: &str) {
    let body = format!(r#"{{"hook":"{hook}","mode":"{mode}"}}"#);
    let request = Request::post(url, body).with_header("content-type", "application/json");
    if let Err(e) = http::send(request) {
        log::warn(format_args!(
            "adversary {hook}: report to {url} failed: {e}"
        ));
    }
}

fn get(url: &str) -> String {
    match http::send(Request::get(url)) {
        Ok(response) => format!("http: GET {url}: status {}", response.status),
        Err(e) => format!("http: GET {url}: {e}"),
    }
}

/// The inline `spec.data` of the object a lifecycle hook is for.
fn owner_data(coupling: &Coupling) -> Values {
    coupling
        .owner()
        .and_then(|o| o.get("spec.data"))
        .and_then(|data| data.as_object())
        .map(|data| {
            data.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

impl Apparatus for Adversary {
    fn config(&self, input: ConfigInput) -> HookResult<Values> {
        misbehave("config", input.owner_data())?;
        Ok(Values::new())
    }

    fn created(&self, coupling: Coupling) -> HookResult {
        misbehave("created", &owner_data(&coupling))
    }

    fn coupled(&self, coupling: Coupling) -> HookResult {
        misbehave("coupled", &owner_data(&coupling))
    }

    fn updated(&self, coupling: Coupling) -> HookResult {
        misbehave("updated", &owner_data(&coupling))
    }

    fn decoupled(&self, coupling: Coupling) -> HookResult {
        misbehave("decoupled", &owner_data(&coupling))
    }

    fn deleted(&self, coupling: Coupling) -> HookResult {
        misbehave("deleted", &owner_data(&coupling))
    }
}

plugboard_sdk::export!(Adversary);

#[cfg(test)]
mod tests {
    //! Natively there is no sandbox: these tests check that each mode does what it says and
    //! reports it in the documented shape. Modes that end the process (`spin`, `hog`, `trap`)
    //! are exercised only inside plugboard.

    use super::*;
    use plugboard_sdk::http::{Response, SendError};
    use plugboard_sdk::serde_json::{self, json};
    use plugboard_sdk::testing::{self, Harness};
    use plugboard_sdk::{Object, Side};

    fn plug(data: serde_json::Value) -> Object {
        testing::plug("ns", "p", json!({ "data": data }))
    }

    fn socket() -> Object {
        testing::socket("ns", "s", json!({}))
    }

    fn config(h: &Harness<Adversary>, keys: &[(&str, &str)]) -> HookResult<Values> {
        let input = keys.iter().fold(
            ConfigInput::new(Side::Plug, plug(json!({})), socket()),
            |i, (k, v)| i.with_plug_data(*k, *v),
        );
        h.config(input)
    }

    fn failure(result: HookResult<Values>) -> String {
        match result {
            Err(HookError::Failed(message)) => message,
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn ok_and_no_mode_behave() {
        let h = Harness::new(Adversary);
        assert_eq!(config(&h, &[]), Ok(Values::new()));
        assert_eq!(config(&h, &[("mode", "ok")]), Ok(Values::new()));
        assert!(h.logs().is_empty());
    }

    #[test]
    fn unknown_mode_is_invalid_input_naming_the_modes() {
        let h = Harness::new(Adversary);
        let err = config(&h, &[("mode", "explode")]).unwrap_err();
        assert!(
            matches!(&err, HookError::InvalidInput(m) if m.contains("`explode`") && m.contains("hog-try")),
            "{err:?}"
        );
    }

    #[test]
    fn fs_reports_what_opening_the_file_did() {
        let h = Harness::new(Adversary);
        let missing = failure(config(
            &h,
            &[("mode", "fs"), ("path", "/nonexistent/adversary")],
        ));
        assert!(
            missing.starts_with("fs: open /nonexistent/adversary: "),
            "{missing}"
        );
        assert_eq!(h.log_messages(), [format!("adversary config: {missing}")]);
    }

    #[test]
    fn env_reports_the_variable_and_how_many_are_visible() {
        let h = Harness::new(Adversary);
        let unset = failure(config(
            &h,
            &[("mode", "env"), ("var", "PLUGBOARD_ADVERSARY_UNSET")],
        ));
        assert!(
            unset.starts_with("env: PLUGBOARD_ADVERSARY_UNSET is not set"),
            "{unset}"
        );
        assert!(unset.ends_with("variables visible)"), "{unset}");
    }

    #[test]
    fn socket_reports_a_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let h = Harness::new(Adversary);
        let outcome = failure(config(&h, &[("mode", "socket"), ("addr", &addr)]));
        assert_eq!(outcome, format!("socket: connected to {addr}"));
    }

    #[test]
    fn error_modes_return_their_kind_after_reporting_the_call() {
        let mut h = Harness::new(Adversary);
        h.respond("POST", "http://counter.example/", Response::new(200));
        let report = ("report", "http://counter.example/");
        assert_eq!(
            config(&h, &[("mode", "invalid-input"), ("message", "no"), report]),
            Err(HookError::InvalidInput("no".into()))
        );
        assert_eq!(
            config(&h, &[("mode", "retry-later"), report]),
            Err(HookError::RetryLater("retry-later".into()))
        );
        assert_eq!(
            config(&h, &[("mode", "failed"), report]),
            Err(HookError::Failed("failed".into()))
        );
        let bodies: Vec<String> = h
            .requests()
            .into_iter()
            .map(|r| String::from_utf8(r.body.unwrap_or_default()).unwrap())
            .collect();
        assert_eq!(
            bodies,
            [
                r#"{"hook":"config","mode":"invalid-input"}"#,
                r#"{"hook":"config","mode":"retry-later"}"#,
                r#"{"hook":"config","mode":"failed"}"#
            ]
        );
    }

    #[test]
    fn http_reports_the_status_or_the_refusal() {
        let mut h = Harness::new(Adversary);
        h.respond("GET", "http://allowed.example/", Response::new(204));
        let allowed = failure(config(
            &h,
            &[("mode", "http"), ("url", "http://allowed.example/")],
        ));
        assert_eq!(allowed, "http: GET http://allowed.example/: status 204");

        h.fail(
            "GET",
            "http://denied.example/",
            SendError::Denied("not in allowedHosts".into()),
        );
        let denied = failure(config(
            &h,
            &[("mode", "http"), ("url", "http://denied.example/")],
        ));
        assert_eq!(
            denied,
            "http: GET http://denied.example/: request denied: not in allowedHosts"
        );

        let no_url = config(&h, &[("mode", "http")]).unwrap_err();
        assert!(matches!(no_url, HookError::InvalidInput(_)));
    }

    /// `flood` writes to the process's stdout and stderr; this apparatus runs the same code
    /// into buffers, so the test output stays readable.
    #[derive(Default)]
    struct FloodIntoBuffers {
        stdout: std::cell::RefCell<Vec<u8>>,
        stderr: std::cell::RefCell<Vec<u8>>,
    }

    impl Apparatus for FloodIntoBuffers {
        fn created(&self, _: Coupling) -> HookResult {
            let outcome = flood_into(
                1,
                &mut *self.stdout.borrow_mut(),
                &mut *self.stderr.borrow_mut(),
            );
            Err(HookError::failed(outcome))
        }
    }

    #[test]
    fn flood_writes_each_sink_and_reports_it() {
        let h = Harness::new(FloodIntoBuffers::default());
        let err = h.created(Coupling::new(Side::Plug)).unwrap_err();
        assert_eq!(
            err.message(),
            "flood: stdout 1 MiB written; stderr 1 MiB written; 1024 log lines sent"
        );
        let flooded = h.apparatus();
        assert_eq!(flooded.stdout.borrow().len(), MIB);
        assert_eq!(flooded.stderr.borrow().len(), MIB);
        assert_eq!(h.logs().len(), 1024);

        let h = Harness::new(Adversary);
        assert!(matches!(
            config(&h, &[("mode", "flood"), ("megabytes", "lots")]),
            Err(HookError::InvalidInput(_))
        ));
    }

    #[test]
    #[should_panic(expected = "adversary: panic in config, as instructed")]
    fn panic_panics() {
        let h = Harness::new(Adversary);
        let _ = config(&h, &[("mode", "panic")]);
    }

    #[test]
    fn lifecycle_hooks_read_the_owners_inline_data() {
        let h = Harness::new(Adversary);
        let coupling = Coupling::new(Side::Plug)
            .with_plug(plug(json!({"mode": "fs", "path": "/nonexistent/x"})))
            .with_socket(socket());
        let err = h.coupled(coupling.clone()).unwrap_err();
        assert!(
            err.message().starts_with("fs: open /nonexistent/x: "),
            "{err}"
        );

        // On the Socket side the Socket's data counts, and it has none.
        let mut socket_side = coupling;
        socket_side.side = Side::Socket;
        assert_eq!(h.coupled(socket_side), Ok(()));
    }

    #[test]
    fn hooks_limits_the_misbehaviour_to_the_listed_hooks() {
        let h = Harness::new(Adversary);
        let coupling = Coupling::new(Side::Plug).with_plug(plug(
            json!({"mode": "env", "var": "X", "hooks": "deleted, coupled"}),
        ));
        assert_eq!(h.created(coupling.clone()), Ok(()));
        assert!(h.coupled(coupling.clone()).is_err());
        assert!(h.deleted(coupling).is_err());
        assert_eq!(
            config(&h, &[("mode", "env"), ("hooks", "created")]),
            Ok(Values::new())
        );
    }
}
