//! The WebAssembly runtime against real components compiled from `plugins/`: hooks run,
//! every sandbox limit holds and ends as a typed error, the operator's runtime survives all of
//! it, and compiled components are cached across restarts. No control plane needed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests and their helpers fail by panicking"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugboard::apparatus::{ConfigRequest, HookRequest, Side};
use plugboard::crd::LifecyclePoint;
use plugboard::engine::Values;
use plugboard::wasm::{
    CacheKey, CallContext, CallLimits, Loaded, WasmError, WasmOptions, WasmRuntime,
};
use plugboard_tests::recorder::Recorder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn component(name: &str) -> PathBuf {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || plugboard_tests::plugins::component(&name))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}", plugboard_tests::error_chain(&e)))
}

fn digest(path: &Path) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
    )
}

async fn load(rt: &WasmRuntime, name: &str) -> Arc<Loaded> {
    let path = component(name).await;
    rt.load(&digest(&path), &path).unwrap()
}

fn plug(data: Value) -> Value {
    json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug",
           "metadata": {"name": "app", "namespace": "team", "uid": "u-1"},
           "spec": {"socket": {"name": "db"}, "data": data}})
}

fn socket() -> Value {
    json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": "Socket",
           "metadata": {"name": "db", "namespace": "team", "uid": "u-2"}, "spec": {}})
}

fn limits(timeout_ms: u64, memory_mib: u64) -> CallLimits {
    CallLimits {
        timeout: Duration::from_millis(timeout_ms),
        memory: memory_mib << 20,
    }
}

fn context(allowed: &[&str]) -> CallContext {
    CallContext {
        owner: "Plug team/app".into(),
        allowed_hosts: allowed.iter().map(|h| (*h).to_owned()).collect(),
    }
}

/// Calls the adversary's `config` hook with `data` as the Plug's data.
async fn adversary(
    rt: &WasmRuntime,
    data: &[(&str, &str)],
    allowed: &[&str],
) -> Result<Values, WasmError> {
    let loaded = load(rt, "adversary").await;
    let plug_data: Values = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let p = plug(json!({}));
    let s = socket();
    let empty = Values::new();
    let request = ConfigRequest {
        side: Side::Plug,
        plug: &p,
        socket: &s,
        plug_data: &plug_data,
        socket_data: &empty,
        vars: None,
    };
    rt.config(loaded, &request, limits(500, 64), context(allowed))
        .await
}

fn guest_message(result: Result<Values, WasmError>) -> String {
    match result {
        Err(WasmError::Guest { message, .. }) => message,
        other => panic!("expected the hook to report an error, got {other:?}"),
    }
}

/// The policy these tests run under: the default plus loopback, where their servers listen.
fn loopback_egress() -> plugboard::egress::EgressPolicy {
    plugboard::egress::EgressPolicy::new(
        plugboard::egress::EgressOptions::default().allowing_loopback(),
    )
}

fn runtime() -> WasmRuntime {
    WasmRuntime::new(WasmOptions::default(), loopback_egress()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_hooks_run_with_their_inputs() {
    let rt = runtime();
    let loaded = load(&rt, "recorder").await;
    let p = plug(json!({"region": "eu"}));
    let s = socket();
    let plug_data: Values = [("region".to_owned(), "eu".to_owned())].into();
    let empty = Values::new();
    let request = ConfigRequest {
        side: Side::Socket,
        plug: &p,
        socket: &s,
        plug_data: &plug_data,
        socket_data: &empty,
        vars: None,
    };
    let config = rt
        .config(loaded.clone(), &request, limits(2000, 64), context(&[]))
        .await
        .unwrap();
    eprintln!("recorder config: {config:?}");
    assert!(!config.is_empty(), "the recorder reports what it received");
    assert!(config.values().any(|v| v.contains("app")), "{config:?}");
    for point in LifecyclePoint::ALL {
        let request = HookRequest {
            side: Side::Plug,
            point,
            plug: Some(&p),
            socket: Some(&s),
            plug_config: Some(&empty),
            socket_config: Some(&empty),
        };
        rt.hook(loaded.clone(), &request, limits(2000, 64), context(&[]))
            .await
            .unwrap_or_else(|e| panic!("{point:?}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_at_the_deadline() {
    let rt = runtime();
    let started = Instant::now();
    let result = adversary(&rt, &[("mode", "spin")], &[]).await;
    eprintln!("spin stopped after {:?}", started.elapsed());
    assert!(
        matches!(result, Err(WasmError::Timeout { after, .. }) if after == Duration::from_millis(500)),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_allocation_is_stopped_at_the_memory_cap() {
    let rt = runtime();
    let result = adversary(&rt, &[("mode", "hog")], &[]).await;
    assert!(
        matches!(result, Err(WasmError::OutOfMemory { limit, .. }) if limit == 64 << 20),
        "{result:?}"
    );
    let message = guest_message(adversary(&rt, &[("mode", "hog-try")], &[]).await);
    assert!(message.contains("hog-try"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_traps_are_reported_not_crashes() {
    let rt = runtime();
    match adversary(&rt, &[("mode", "panic")], &[]).await {
        Err(WasmError::Trap { message, .. }) => {
            assert!(
                message.contains("panic"),
                "the panic message reaches the condition: {message}"
            )
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    let result = adversary(&rt, &[("mode", "trap")], &[]).await;
    assert!(matches!(result, Err(WasmError::Trap { .. })), "{result:?}");
    // The runtime is unharmed.
    assert_eq!(
        adversary(&rt, &[("mode", "ok")], &[]).await.unwrap(),
        Values::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_floods_are_bounded() {
    let rt = runtime();
    let result = adversary(&rt, &[("mode", "flood"), ("megabytes", "8")], &[]).await;
    eprintln!("flood: {result:?}");
    match result {
        Err(WasmError::OutputFlood { budget, .. }) => assert_eq!(budget, 64 << 10),
        Err(WasmError::Guest { message, .. }) => {
            assert!(message.starts_with("flood:"), "{message}")
        }
        other => panic!("expected the flood to be cut off, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_filesystem_environment_or_sockets() {
    let rt = runtime();
    let fs = guest_message(adversary(&rt, &[("mode", "fs")], &[]).await);
    assert!(fs.starts_with("fs: "), "{fs}");
    assert!(
        !fs.contains("root:"),
        "the sandbox leaked /etc/passwd: {fs}"
    );
    let env = guest_message(adversary(&rt, &[("mode", "env"), ("var", "PATH")], &[]).await);
    assert!(env.contains("0 variables visible"), "{env}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let socket = guest_message(adversary(&rt, &[("mode", "socket"), ("addr", &addr)], &[]).await);
    eprintln!("fs: {fs}\nenv: {env}\nsocket: {socket}");
    assert!(socket.starts_with("socket: "), "{socket}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the component reached a socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reaches_only_allowed_hosts() {
    let rt = runtime();
    let rec = Recorder::start().await;
    let url = format!("{}/probe", rec.url());
    let denied = guest_message(adversary(&rt, &[("mode", "http"), ("url", &url)], &[]).await);
    assert!(
        denied.contains("not in spec.apparatus.wasm.allowedHosts"),
        "{denied}"
    );
    assert!(rec.calls().is_empty());
    let host = rec.url().trim_start_matches("http://").to_owned();
    let allowed = guest_message(adversary(&rt, &[("mode", "http"), ("url", &url)], &[&host]).await);
    assert!(allowed.contains("status 200"), "{allowed}");
    assert_eq!(rec.calls().len(), 1);
    assert_eq!(rec.calls()[0].path, "/probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_request_never_outlives_the_call_deadline() {
    // The host's own request timeout is an hour: only the call's 500 ms deadline can end a
    // request to a server that never answers.
    let rt = WasmRuntime::new(
        WasmOptions {
            http_timeout: Duration::from_secs(3600),
            ..WasmOptions::default()
        },
        loopback_egress(),
    )
    .unwrap();
    let rec = Recorder::start().await;
    rec.reply("/slow", plugboard_tests::recorder::Reply::Hang);
    let url = format!("{}/slow", rec.url());
    let host = rec.url().trim_start_matches("http://").to_owned();
    // Built and loaded before the clock starts: only the call is timed.
    load(&rt, "adversary").await;
    let data = [("mode", "http"), ("url", url.as_str())];
    let allowed = [host.as_str()];
    let call = adversary(&rt, &data, &allowed);
    let result = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the call outlived its deadline by a minute: the request was not capped");
    // The request ends when the deadline passes; the guest is then stopped at its next
    // instruction, or reports the timed-out request if it gets there first.
    match result {
        Err(WasmError::Timeout { after, .. }) => {
            assert_eq!(after, Duration::from_millis(500));
        }
        Err(WasmError::Guest { message, .. }) => {
            assert!(message.contains("request timed out"), "{message}");
        }
        other => panic!("expected the deadline to end the call, got {other:?}"),
    }
    assert_eq!(rec.calls().len(), 1, "the request was sent");
}

/// Options with a compiled cache in `state/cache` and its key file in `state/key`.
fn cached(state: &Path) -> WasmOptions {
    WasmOptions {
        cache_dir: Some(state.join("cache")),
        cache_key: CacheKey::File(state.join("key").join("cache.key")),
        ..Default::default()
    }
}

/// The one compiled artifact in `cache`.
fn artifact(cache: &Path) -> PathBuf {
    std::fs::read_dir(cache.join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_are_cached_across_restarts() {
    let state = tempfile::tempdir().unwrap();
    let options = cached(state.path());
    let path = component("recorder").await;
    let digest = digest(&path);
    let first = WasmRuntime::new(options.clone(), loopback_egress())
        .unwrap()
        .load(&digest, &path)
        .unwrap();
    assert!(!first.from_cache);
    // A new runtime with the same key file is a restarted operator: same cache, new engine.
    let second = WasmRuntime::new(options.clone(), loopback_egress())
        .unwrap()
        .load(&digest, &path)
        .unwrap();
    assert!(second.from_cache, "the restarted runtime recompiled");
    eprintln!(
        "compile {:?}, load from cache {:?}",
        first.load_time, second.load_time
    );
    // A damaged artifact is never loaded: it is recompiled.
    let compiled = artifact(&state.path().join("cache"));
    let mut bytes = std::fs::read(&compiled).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&compiled, bytes).unwrap();
    let third = WasmRuntime::new(options, loopback_egress())
        .unwrap()
        .load(&digest, &path)
        .unwrap();
    assert!(!third.from_cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_artifact_with_a_matching_hash_is_recompiled_not_loaded() {
    use std::os::unix::fs::MetadataExt as _;
    let state = tempfile::tempdir().unwrap();
    let options = cached(state.path());
    let path = component("recorder").await;
    let digest = digest(&path);
    WasmRuntime::new(options.clone(), loopback_egress())
        .unwrap()
        .load(&digest, &path)
        .unwrap();
    let cache = state.path().join("cache");
    assert_eq!(std::fs::metadata(&cache).unwrap().mode() & 0o777, 0o700);
    let key = state.path().join("key/cache.key");
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    // Someone who can write the cache changes the artifact and rewrites every checksum beside
    // it to match — but cannot compute the tag without the key.
    let compiled = artifact(&cache);
    let mut bytes = std::fs::read(&compiled).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&compiled, &bytes).unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    for entry in std::fs::read_dir(cache.join("compiled")).unwrap() {
        let p = entry.unwrap().path();
        if p != compiled {
            std::fs::write(&p, &sha).unwrap();
        }
    }
    std::fs::write(compiled.with_extension("cwasm.sha256"), &sha).unwrap();
    let reloaded = WasmRuntime::new(options.clone(), loopback_egress())
        .unwrap()
        .load(&digest, &path)
        .unwrap();
    assert!(!reloaded.from_cache, "a tampered artifact was loaded");
    // The recompiled artifact replaced it and loads again.
    assert_ne!(std::fs::read(&compiled).unwrap(), bytes);
    let again = WasmRuntime::new(options, loopback_egress())
        .unwrap()
        .load(&digest, &path)
        .unwrap();
    assert!(again.from_cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_of_another_key_are_recompiled() {
    let state = tempfile::tempdir().unwrap();
    let path = component("recorder").await;
    let digest = digest(&path);
    WasmRuntime::new(cached(state.path()), loopback_egress())
        .unwrap()
        .load(&digest, &path)
        .unwrap();
    // Without the key file (a key for that runtime only), nothing earlier is trusted.
    let ephemeral = WasmOptions {
        cache_key: CacheKey::Ephemeral,
        ..cached(state.path())
    };
    let loaded = WasmRuntime::new(ephemeral, loopback_egress())
        .unwrap()
        .load(&digest, &path)
        .unwrap();
    assert!(!loaded.from_cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_folder_others_may_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let state = tempfile::tempdir().unwrap();
    let cache = state.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = component("recorder").await;
    let digest = digest(&path);
    let loaded = WasmRuntime::new(cached(state.path()), loopback_egress())
        .unwrap()
        .load(&digest, &path)
        .unwrap();
    // It still runs (from a fresh private folder elsewhere), and wrote nothing into the
    // world-writable one.
    assert!(!loaded.from_cache);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_of_another_contract_version_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.wasm");
    // A component that exports the hooks interface of a version this host does not run.
    let bytes = wat::parse_str(
        r#"(component
             (instance $hooks)
             (export "plugboard:apparatus/hooks@0.2.0" (instance $hooks)))"#,
    )
    .unwrap();
    std::fs::write(&other, bytes).unwrap();
    let error = runtime().load("sha256:other", &other).unwrap_err();
    assert!(
        matches!(&error, WasmError::IncompatibleVersion { found } if found.contains("@0.2.0")),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("plugboard:apparatus/hooks@0.1.0"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_are_evicted_least_recently_used_first() {
    let rt = WasmRuntime::new(
        WasmOptions {
            max_loaded: 1,
            ..WasmOptions::default()
        },
        loopback_egress(),
    )
    .unwrap();
    let adversary = component("adversary").await;
    let recorder = component("recorder").await;
    let kept = rt.load(&digest(&adversary), &adversary).unwrap();
    assert!(rt.is_loaded(&digest(&adversary)));
    rt.load(&digest(&recorder), &recorder).unwrap();
    assert!(
        !rt.is_loaded(&digest(&adversary)),
        "the least recently used is evicted"
    );
    assert!(rt.is_loaded(&digest(&recorder)));
    let (count, bytes) = rt.loaded_usage();
    assert_eq!(count, 1);
    assert!(bytes > 0, "compiled code is counted");
    // What a caller still holds keeps working after its eviction.
    let p = plug(json!({}));
    let s = socket();
    let empty = Values::new();
    let request = ConfigRequest {
        side: Side::Plug,
        plug: &p,
        socket: &s,
        plug_data: &empty,
        socket_data: &empty,
        vars: None,
    };
    rt.config(kept, &request, limits(2000, 64), context(&[]))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_over_the_size_limit_is_not_compiled() {
    let rt = WasmRuntime::new(
        WasmOptions {
            max_component_bytes: 1024,
            ..WasmOptions::default()
        },
        loopback_egress(),
    )
    .unwrap();
    let path = component("adversary").await;
    let error = rt.load(&digest(&path), &path).unwrap_err();
    assert!(
        matches!(error, WasmError::TooLarge { limit: 1024, size } if size > 1024),
        "{error:?}"
    );
    assert_eq!(error.reason(), "ComponentTooLarge");
    assert!(!rt.is_loaded(&digest(&path)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_for_a_slot_a_bounded_time() {
    let rt = Arc::new(
        WasmRuntime::new(
            WasmOptions {
                max_concurrent_calls: 1,
                queue_timeout: Duration::from_millis(100),
                ..WasmOptions::default()
            },
            loopback_egress(),
        )
        .unwrap(),
    );
    // One call spins until its 500 ms deadline and holds the only slot meanwhile. On a loaded
    // machine one of the probing calls below may hold the slot longer than the 100 ms wait when
    // the spinner arrives, so the spinner tries again until it has run to its deadline.
    let spinning = {
        let rt = rt.clone();
        tokio::spawn(async move {
            loop {
                match adversary(&rt, &[("mode", "spin")], &[]).await {
                    Err(WasmError::Busy { .. }) => continue,
                    other => return other,
                }
            }
        })
    };
    let waited =
        plugboard_tests::wait_for("a call refused as busy", Duration::from_secs(10), || {
            let rt = rt.clone();
            async move {
                match adversary(&rt, &[("mode", "ok")], &[]).await {
                    Err(WasmError::Busy { waited, .. }) => Ok(waited),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await
        .unwrap();
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(matches!(
        spinning.await.unwrap(),
        Err(WasmError::Timeout { .. })
    ));
    // The slot is free again.
    adversary(&rt, &[("mode", "ok")], &[]).await.unwrap();
}
