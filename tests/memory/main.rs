//! The memory budget holds against a tenant's memory hog: twenty concurrent hook calls of the
//! adversary, each allocating and touching nearly the largest memory cap the budget allows,
//! leave the runtime alive and the process's resident memory under the budget. A test binary
//! of its own, so no other test's memory is counted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests and their helpers fail by panicking"
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use plugboard::apparatus::{ConfigRequest, Side};
use plugboard::budget::MemoryBudget;
use plugboard::engine::Values;
use plugboard::wasm::{CallContext, CallLimits, WasmError, WasmOptions, WasmRuntime};
use serde_json::json;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

fn digest(path: &Path) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_memory_hogs_at_the_largest_cap_stay_under_the_budget() {
    let budget = MemoryBudget::derive(512 * MIB);
    let options = WasmOptions {
        // All twenty must get a slot eventually: the assertion is about memory, not time.
        queue_timeout: Duration::from_secs(600),
        ..WasmOptions::from_budget(&budget)
    };
    eprintln!(
        "budget {} MiB: {} calls of at most {} MiB",
        budget.total / MIB,
        options.max_concurrent_calls,
        options.max_memory / MIB
    );
    let cap = options.max_memory;
    let rt = Arc::new(
        WasmRuntime::new(
            options,
            plugboard::egress::EgressPolicy::new(Default::default()),
        )
        .unwrap(),
    );
    let path = tokio::task::spawn_blocking(|| plugboard_tests::plugins::component("adversary"))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}", plugboard_tests::error_chain(&e)));
    let loaded = rt.load(&digest(&path), &path).unwrap();

    // Just under the cap (the guest's own stack and data take the rest).
    let megabytes = (cap / MIB - 4).to_string();
    let call = |rt: Arc<WasmRuntime>, loaded, megabytes: String| async move {
        let plug = json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug",
               "metadata": {"name": "app", "namespace": "team", "uid": "u-1"},
               "spec": {"socket": {"name": "db"}}});
        let socket = json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": "Socket",
               "metadata": {"name": "db", "namespace": "team", "uid": "u-2"}, "spec": {}});
        let data: Values = [
            ("mode".to_owned(), "hog".to_owned()),
            ("megabytes".to_owned(), megabytes),
        ]
        .into();
        let empty = Values::new();
        let request = ConfigRequest {
            side: Side::Plug,
            plug: &plug,
            socket: &socket,
            plug_data: &data,
            socket_data: &empty,
            vars: None,
        };
        rt.config(
            loaded,
            &request,
            CallLimits {
                timeout: Duration::from_secs(30),
                memory: cap,
            },
            CallContext {
                owner: "Plug team/app".into(),
                allowed_hosts: Vec::new(),
            },
        )
        .await
    };
    // One call first, so the baseline includes what any call sets up once.
    let warm = call(rt.clone(), loaded.clone(), "1".into()).await;
    assert!(
        matches!(&warm, Err(WasmError::Guest { message, .. }) if message.contains("hog: allocated")),
        "{warm:?}"
    );
    let baseline = status_bytes("VmRSS");
    // Sample the resident size while the calls run (and the kernel's peak, where it can be
    // reset, as a second opinion).
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(status_bytes("VmRSS"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let calls: Vec<_> = (0..20)
        .map(|_| tokio::spawn(call(rt.clone(), loaded.clone(), megabytes.clone())))
        .collect();
    let mut touched = 0;
    for c in calls {
        match c.await.unwrap() {
            Err(WasmError::Guest { message, .. }) if message.contains("hog: allocated") => {
                touched += 1;
            }
            other => panic!("a hog call ended otherwise: {other:?}"),
        }
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let mut peak = peak.load(Ordering::Relaxed);
    if hwm_reset {
        peak = peak.max(status_bytes("VmHWM"));
    }
    eprintln!(
        "baseline {} MiB, peak {} MiB, budget {} MiB; {touched} calls each touched {megabytes} MiB",
        baseline / MIB,
        peak / MIB,
        budget.total / MIB
    );
    assert_eq!(
        touched, 20,
        "every call ran to the end: the runtime is alive"
    );
    assert!(
        peak < budget.total,
        "resident memory peaked at {} MiB, over the budget of {} MiB",
        peak / MIB,
        budget.total / MIB
    );
    // The calls themselves stayed within their share: slots × cap (and well below what
    // twenty calls at once would hold).
    let calls_share = budget.concurrent_calls as u64 * cap;
    assert!(
        peak.saturating_sub(baseline) <= calls_share + 32 * MIB,
        "the calls added {} MiB, more than {} slots × {} MiB",
        (peak - baseline) / MIB,
        budget.concurrent_calls,
        cap / MIB
    );
    // And the runtime still works.
    let after = call(rt.clone(), loaded, "1".into()).await;
    assert!(
        matches!(&after, Err(WasmError::Guest { message, .. }) if message.contains("hog: allocated")),
        "{after:?}"
    );
}
