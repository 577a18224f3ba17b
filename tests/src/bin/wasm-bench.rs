//! Benchmark of the WebAssembly apparatus, printed as a table: per test plugin, the latency of
//! a hook call in a fresh instance (p50/p99), first use (pull from a loopback registry +
//! compile), and restart-to-ready (cached pull + loading the compiled form). The baseline,
//! measured in the same run, is the same hook call to a loopback HTTP apparatus. Then where
//! the time goes: a hook call step by step (the runtime's own counters, mean per call) and a
//! restart part by part. Figures are medians over several runs; run it in release mode:
//!
//! ```sh
//! cargo run --release -p plugboard-tests --bin wasm-bench -- [runs] [calls]
//! ```

use std::time::{Duration, Instant};

use plugboard::apparatus::http::{Endpoint, HttpApparatus, HttpOptions};
use plugboard::apparatus::{HookRequest, Side};
use plugboard::crd::LifecyclePoint;
use plugboard::engine::Values;
use plugboard::oci::{ComponentStore, RegistryAuth, StoreOptions, push_component};
use plugboard::wasm::{CallContext, CallLimits, CallSteps, WasmOptions, WasmRuntime};
use plugboard_tests::recorder::Recorder;
use plugboard_tests::registry::Registry;
use serde_json::json;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = arg(1, 5);
    let calls = arg(2, 2000);
    let plug = json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug",
                      "metadata": {"name": "app", "namespace": "bench"}, "spec": {"socket": {"name": "db"}}});
    let socket = json!({"apiVersion": "plugboard.dev/v1alpha1", "kind": "Socket",
                        "metadata": {"name": "db", "namespace": "bench"}, "spec": {}});
    let config: Values = [("host".to_owned(), "db".to_owned())].into();
    let request = HookRequest {
        side: Side::Socket,
        point: LifecyclePoint::Coupled,
        plug: Some(&plug),
        socket: Some(&socket),
        plug_config: Some(&config),
        socket_config: Some(&config),
    };
    let limits = CallLimits {
        timeout: Duration::from_secs(2),
        memory: 64 << 20,
    };
    let registry = Registry::start().await?;

    // Baseline: the same hook over HTTP to a loopback apparatus.
    let rec = Recorder::start().await;
    // The bench's servers listen on loopback, which the default egress policy refuses.
    let egress = plugboard::egress::EgressPolicy::new(
        plugboard::egress::EgressOptions::default().allowing_loopback(),
    );
    let http = HttpApparatus::new(HttpOptions::default(), egress.clone())?;
    let endpoint = Endpoint::resolve(Some(&rec.url()), "db", "bench", false)?;
    let mut http_p50 = Vec::new();
    let mut http_p99 = Vec::new();
    for _ in 0..runs {
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            http.hook(&endpoint, &request).await?;
            times.push(t.elapsed());
        }
        rec.clear();
        times.sort();
        http_p50.push(percentile(&times, 0.5));
        http_p99.push(percentile(&times, 0.99));
    }
    let base_p50 = median(http_p50.clone());
    println!(
        "baseline: HTTP apparatus hook on loopback, {runs} runs x {calls} calls: p50 {:.0} µs, p99 {:.0} µs\n",
        base_p50,
        median(http_p99)
    );
    println!(
        "{:<10} {:>9} {:>9} {:>10} {:>9} {:>11} {:>12} {:>14}",
        "plugin", "size KiB", "p50 µs", "p99 µs", "p50/HTTP", "pull ms", "compile ms", "restart ms"
    );
    // Per plugin: the mean step times of its calls, and the parts of its restarts.
    let mut breakdowns: Vec<(&str, Vec<f64>, [f64; 4])> = Vec::new();
    for name in ["recorder", "adversary"] {
        let path = tokio::task::spawn_blocking(move || plugboard_tests::plugins::component(name))
            .await??;
        let bytes = std::fs::read(&path)?;
        let image = registry.image(&format!("bench/{name}:1"));
        push_component(
            &image,
            &bytes,
            &RegistryAuth::Anonymous,
            &registry.plain_http_hosts(),
        )
        .await?;
        let (mut p50s, mut p99s, mut pulls, mut compiles, mut restarts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut steps: Vec<Vec<f64>> = vec![Vec::new(); CallSteps::default().named().len()];
        let mut parts: [Vec<f64>; 4] = Default::default();
        for _ in 0..runs {
            let dir = tempfile::tempdir()?;
            let store_options = || {
                let mut o = StoreOptions::new(dir.path().join("oci"));
                // The registry listens on loopback, which the default egress policy refuses.
                o.egress = plugboard::egress::EgressPolicy::new(
                    plugboard::egress::EgressOptions::default().allowing_loopback(),
                );
                o.plain_http_hosts = registry.plain_http_hosts();
                o
            };
            let wasm_options = WasmOptions {
                cache_dir: Some(dir.path().join("compiled")),
                // A key that survives the restart, outside the cache folder.
                cache_key: plugboard::wasm::CacheKey::File(dir.path().join("key/cache.key")),
                ..Default::default()
            };
            // First use: pull, then compile.
            let store = ComponentStore::open(store_options())?;
            let t = Instant::now();
            let fetched = store.fetch(&image, &RegistryAuth::Anonymous).await?;
            pulls.push(t.elapsed().as_secs_f64() * 1e3);
            let runtime = WasmRuntime::new(wasm_options.clone(), egress.clone())?;
            let t = Instant::now();
            let loaded = runtime.load(&fetched.digest, &fetched.path)?;
            compiles.push(t.elapsed().as_secs_f64() * 1e3);
            drop((store, runtime));
            // Restart: new store and runtime on the same folders, pinned digest.
            let pinned = format!("{}@{}", image, fetched.manifest_digest);
            let t = Instant::now();
            let store = ComponentStore::open(store_options())?;
            let opened = Instant::now();
            let runtime = WasmRuntime::new(wasm_options, egress.clone())?;
            let started = Instant::now();
            let again = store.fetch(&pinned, &RegistryAuth::Anonymous).await?;
            let fetched_at = Instant::now();
            let reloaded = runtime.load(&again.digest, &again.path)?;
            let done = Instant::now();
            restarts.push((done - t).as_secs_f64() * 1e3);
            for (part, d) in parts.iter_mut().zip([
                opened - t,
                started - opened,
                fetched_at - started,
                done - fetched_at,
            ]) {
                part.push(d.as_secs_f64() * 1e3);
            }
            assert!(reloaded.from_cache, "restart recompiled");
            drop(loaded);
            // Hook calls, each in a fresh instance.
            let context = CallContext {
                owner: "Socket bench/db".into(),
                allowed_hosts: Vec::new(),
            };
            let mut times = Vec::with_capacity(calls);
            let before = runtime.call_steps();
            for _ in 0..calls {
                let t = Instant::now();
                runtime
                    .hook(reloaded.clone(), &request, limits, context.clone())
                    .await?;
                times.push(t.elapsed());
            }
            let spent = runtime.call_steps().since(&before);
            let per_call = spent.calls.max(1) as f64;
            for (step, (_, total)) in steps.iter_mut().zip(spent.named()) {
                step.push(total.as_secs_f64() * 1e6 / per_call);
            }
            times.sort();
            p50s.push(percentile(&times, 0.5));
            p99s.push(percentile(&times, 0.99));
        }
        let p50 = median(p50s);
        println!(
            "{:<10} {:>9.0} {:>9.0} {:>10.0} {:>9.2} {:>11.1} {:>12.1} {:>14.2}",
            name,
            bytes.len() as f64 / 1024.0,
            p50,
            median(p99s),
            p50 / base_p50,
            median(pulls),
            median(compiles),
            median(restarts),
        );
        let [a, b, c, d] = parts;
        breakdowns.push((
            name,
            steps.into_iter().map(median).collect(),
            [median(a), median(b), median(c), median(d)],
        ));
    }
    println!(
        "\nmedians over {runs} runs; restart = new store + runtime, cached pull by digest + load of the compiled form"
    );
    println!("\nhook call step by step, mean µs per call (the runtime's counters):");
    print!("{:<10}", "plugin");
    for (step, _) in CallSteps::default().named() {
        print!(" {step:>11}");
    }
    println!(" {:>11}", "sum");
    for (name, steps, _) in &breakdowns {
        print!("{name:<10}");
        for us in steps {
            print!(" {us:>11.1}");
        }
        println!(" {:>11.1}", steps.iter().sum::<f64>());
    }
    println!("\nrestart part by part, ms:");
    println!(
        "{:<10} {:>11} {:>11} {:>11} {:>11}",
        "plugin", "open store", "runtime", "fetch", "load"
    );
    for (name, _, parts) in &breakdowns {
        println!(
            "{name:<10} {:>11.2} {:>11.2} {:>11.2} {:>11.2}",
            parts[0], parts[1], parts[2], parts[3]
        );
    }
    Ok(())
}
