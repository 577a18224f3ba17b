//! Benchmark of the operator against the local control plane, printed as tables: Plug
//! create → Ready latency (no apparatus, a loopback HTTP apparatus, a WebAssembly apparatus),
//! and N Plugs on one Socket and N Plug/Socket pairs: time to all Ready, the API server's own
//! request counts per coupling by verb and resource, Events per coupling, the operator's CPU
//! time and peak resident memory, time to delete them all and memory after. Ratios are against
//! baselines of the same run (the smallest size for scaling). Figures are medians over runs.
//!
//! The operator runs as a separate process (`plugboard-operator`, this crate's copy of the
//! host binary, with its default options), one per scenario, so its CPU and memory are its
//! own. Run it in release mode:
//!
//! ```sh
//! cargo run --release -p plugboard-tests --bin bench -- [--runs N] [--sizes 100,1000] [--samples N] [--no-wasm]
//! ```
//!
//! It ends with the WebAssembly call figures of `wasm-bench` (same runs; `--wasm-calls N` calls
//! per run, 0 or `--no-wasm` to leave them out). `--shape pairs` runs one shape of the scaling
//! scenarios only; `--apiserver-profile DIR` saves a CPU profile of the API server taken during
//! those of the largest size.
//!
//! A benchmark, not a test: it asserts nothing about speed.

mod apiserver;
mod operator;
mod procs;
mod profile;
mod watch;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Event;
use kube::api::{DeleteParams, ListParams};
use plugboard::crd::{Plug, Socket};
use plugboard_tests::recorder::Recorder;
use plugboard_tests::registry::Registry;
use plugboard_tests::scenario::{Scenario, TEST_LABEL};
use serde_json::{Value, json};

use operator::OperatorProcess;
use watch::PlugWatch;

type BoxError = Box<dyn std::error::Error>;

/// How long a scenario may take before the benchmark gives up on it.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(900);
/// Objects created at once.
const CREATE_CONCURRENCY: usize = 16;

#[derive(Parser, Debug)]
#[command(about = "Benchmark of plugboard against a local control plane")]
struct Args {
    /// Runs of each scenario; tables show medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Numbers of couplings for the scaling scenarios (the first is the baseline of ratios).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    sizes: Vec<usize>,
    /// Plugs created one after another per latency run.
    #[arg(long, default_value_t = 40)]
    samples: usize,
    /// Leave out the WebAssembly apparatus (no registry, no component build).
    #[arg(long)]
    no_wasm: bool,
    /// Leave out the latency scenarios.
    #[arg(long)]
    no_latency: bool,
    /// Leave out the scaling scenarios.
    #[arg(long)]
    no_scale: bool,
    /// Only this shape of the scaling scenarios: `one-socket` or `pairs`.
    #[arg(long)]
    shape: Option<Shape>,
    /// Save a CPU profile of the API server (pprof) taken during each scaling scenario of
    /// the largest size in this folder; read it with `go tool pprof -top FILE`.
    #[arg(long)]
    apiserver_profile: Option<std::path::PathBuf>,
    /// Length of the API server profile, from the first create.
    #[arg(long, default_value_t = 15)]
    profile_seconds: u64,
    /// Hook calls per run of the WebAssembly call benchmark (`wasm-bench`), the last section;
    /// 0 leaves it out.
    #[arg(long, default_value_t = 2000)]
    wasm_calls: usize,
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One scenario's operator: a fresh namespace, RBAC, state folder and process.
struct Harness {
    sc: Scenario,
    op: OperatorProcess,
    _state: tempfile::TempDir,
}

impl Harness {
    async fn start(bin: &Path, prefix: &str, extra: &[String]) -> Result<Self, BoxError> {
        let sc = Scenario::new(prefix).await;
        let state = tempfile::tempdir()?;
        let kubeconfig = operator::kubeconfig(&sc, state.path()).await?;
        let op = OperatorProcess::start(bin, &kubeconfig, &sc, state.path(), extra)?;
        Ok(Self {
            sc,
            op,
            _state: state,
        })
    }

    fn ns(&self) -> String {
        self.sc.ns.name().to_owned()
    }

    async fn finish(self) {
        self.op.stop().await;
        let _ = self.sc.ns.delete().await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Apparatus {
    None,
    Http,
    Wasm,
}

impl Apparatus {
    fn label(self) -> &'static str {
        match self {
            Apparatus::None => "no apparatus",
            Apparatus::Http => "loopback HTTP apparatus (both sides)",
            Apparatus::Wasm => "WebAssembly apparatus (recorder component, both sides)",
        }
    }
}

/// create → Ready of Plugs made one after another on a ready Socket; p50 and p95 in ms.
async fn latency(
    h: &Harness,
    mode: Apparatus,
    apparatus: Value,
    samples: usize,
) -> Result<(f64, f64), BoxError> {
    let ns = h.ns();
    let socket = format!("lat-{}", format!("{mode:?}").to_lowercase());
    let mut spec = json!({});
    if !apparatus.is_null() {
        spec["apparatus"] = apparatus.clone();
    }
    h.sc.socket(&ns, &socket, spec).await;
    h.sc.wait_socket_ready(&ns, &socket).await;
    let watch = PlugWatch::start(h.sc.api::<Plug>(&ns), &h.sc.run).await;
    let mut times = Vec::with_capacity(samples);
    // Two warm-up Plugs first: connection pools, first-use caches.
    for i in 0..samples + 2 {
        let name = format!("{socket}-{i}");
        let mut spec = json!({"socket": {"name": socket}});
        if !apparatus.is_null() {
            spec["apparatus"] = apparatus.clone();
        }
        let t = Instant::now();
        h.sc.plug(&ns, &name, spec).await;
        let ready = watch
            .wait_ready(&name, Duration::from_secs(60))
            .await
            .ok_or_else(|| format!("Plug {ns}/{name} did not become Ready"))?;
        if i >= 2 {
            times.push(ready.duration_since(t).as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.95)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum Shape {
    OneSocket,
    Pairs,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Shape::OneSocket => "Plugs on one Socket",
            Shape::Pairs => "Plug/Socket pairs",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Shape::OneSocket => "one-socket",
            Shape::Pairs => "pairs",
        }
    }
}

/// What one scaling run measured.
#[derive(Debug, Default, Clone)]
struct ScaleRun {
    ready_s: f64,
    cpu_s: f64,
    idle_rss: f64,
    peak_rss: f64,
    /// RSS when all were Ready.
    ready_rss: f64,
    /// The operator's live heap idle, when all were Ready and after the deletions (MiB).
    heap_idle: f64,
    heap_ready: f64,
    heap_after_delete: f64,
    /// Heap the allocator kept free after the deletions (MiB).
    heap_free_after_delete: f64,
    delete_s: f64,
    rss_after_delete: f64,
    /// Of which anonymous (heap, stacks), the rest being the binary's pages read in.
    anon_rss_after_delete: f64,
    cpu_delete_s: f64,
    /// CPU seconds of the benchmark itself, the API server and etcd, first create to last Ready.
    others_cpu: procs::CpuSample,
    event_objects: f64,
    event_occurrences: f64,
    /// API requests per coupling by (verb, resource), the benchmark's own creates left out.
    requests: BTreeMap<(String, String), f64>,
}

async fn scale(
    bin: &Path,
    control_plane: &procs::ControlPlane,
    shape: Shape,
    n: usize,
    profile: Option<(u64, std::path::PathBuf)>,
) -> Result<ScaleRun, BoxError> {
    let h = Harness::start(bin, "bench-scale", &[]).await?;
    let ns = h.ns();
    let sc = &h.sc;
    // A Socket that is Ready shows the operator is up and watching.
    sc.socket(&ns, "warm", json!({})).await;
    sc.wait_socket_ready(&ns, "warm").await;
    let watch = PlugWatch::start(sc.api::<Plug>(&ns), &sc.run).await;
    let client = sc.client();
    let idle_rss = h.op.rss_mib();
    let heap_idle = h.op.metrics().await?.heap_in_use;
    let before = apiserver::counts(&client).await?;
    let cpu0 = h.op.cpu_seconds();
    let others0 = control_plane.sample();
    let profile =
        profile.map(|(seconds, path)| profile::Profile::start(client.clone(), seconds, path));
    let t0 = Instant::now();
    let names: Vec<usize> = (0..n).collect();
    let ns_ref = ns.as_str();
    futures::stream::iter(names.iter().map(|&i| async move {
        let ns = ns_ref;
        let socket = match shape {
            Shape::OneSocket => "warm".to_owned(),
            Shape::Pairs => {
                let socket = format!("s-{i}");
                sc.socket(ns, &socket, json!({})).await;
                socket
            }
        };
        sc.plug(ns, &format!("p-{i}"), json!({"socket": {"name": socket}}))
            .await;
    }))
    .buffer_unordered(CREATE_CONCURRENCY)
    .collect::<Vec<()>>()
    .await;
    let Some(last) = watch.wait_ready_count(n, SCENARIO_DEADLINE).await else {
        return Err(format!(
            "{n} {}: only {} Ready after {:?}",
            shape.label(),
            watch.ready_count(),
            SCENARIO_DEADLINE
        )
        .into());
    };
    let ready_s = last.duration_since(t0).as_secs_f64();
    let cpu_s = h.op.cpu_seconds() - cpu0;
    let others_cpu = control_plane.sample() - others0;
    let after = apiserver::counts(&client).await?;
    let peak_rss = h.op.peak_rss_mib();
    let ready_rss = h.op.rss_mib();
    let heap_ready = h.op.metrics().await?.heap_in_use;
    if let Some(profile) = profile {
        profile.save().await;
    }

    let events = sc.api::<Event>(&ns).list(&ListParams::default()).await?;
    // The warm-up Socket's Event is not a coupling's.
    let coupling_events: Vec<&Event> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() != Some("SocketCreated") || shape == Shape::Pairs)
        .collect();
    let event_objects = coupling_events.len() as f64 - f64::from(u8::from(shape == Shape::Pairs));
    let event_occurrences = coupling_events
        .iter()
        .map(|e| {
            f64::from(
                e.series
                    .as_ref()
                    .and_then(|s| s.count)
                    .or(e.count)
                    .unwrap_or(1)
                    .max(1),
            )
        })
        .sum::<f64>()
        - f64::from(u8::from(shape == Shape::Pairs));

    let mut requests = apiserver::delta(&before, &after);
    // The benchmark's own creates.
    let own_sockets = if shape == Shape::Pairs { n } else { 0 };
    for (resource, count) in [("plugs", n), ("sockets", own_sockets)] {
        if let Some(v) = requests.get_mut(&("POST".to_owned(), resource.to_owned())) {
            *v -= count as f64;
        }
    }
    requests.retain(|_, v| *v > 0.0);
    for v in requests.values_mut() {
        *v /= n as f64;
    }

    // Deletion: every Plug, and for pairs every Socket.
    let cpu1 = h.op.cpu_seconds();
    let t1 = Instant::now();
    let selector = ListParams::default().labels(&format!("{TEST_LABEL}={}", sc.run));
    sc.api::<Plug>(&ns)
        .delete_collection(&DeleteParams::default(), &selector)
        .await?;
    if !watch.wait_deleted_count(n, SCENARIO_DEADLINE).await {
        return Err(format!("{n} {}: Plugs not deleted in time", shape.label()).into());
    }
    let delete_s = t1.elapsed().as_secs_f64();
    let cpu_delete_s = h.op.cpu_seconds() - cpu1;
    if shape == Shape::Pairs {
        sc.api::<Socket>(&ns)
            .delete_collection(&DeleteParams::default(), &selector)
            .await?;
        let sockets = sc.api::<Socket>(&ns);
        plugboard_tests::wait_for("the Sockets to go", SCENARIO_DEADLINE, || async {
            let left = sockets
                .list_metadata(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} Sockets left"))
            }
        })
        .await?;
    }
    // Measured once the operator's own cache has seen every Plug go (its finalizers are gone:
    // the API server has deleted them), so its deletion work is done, and its periodic memory
    // pass has run since, as it would in any operator left idle that long (at most 10 s).
    let op = &h.op;
    let releases = plugboard_tests::wait_for(
        "the operator to see the Plugs go",
        SCENARIO_DEADLINE,
        || async {
            let m = op.metrics().await.map_err(|e| e.to_string())?;
            if m.plugs == 0.0 {
                Ok(m.heap_releases)
            } else {
                Err(format!("{} Plugs in the operator's cache", m.plugs))
            }
        },
    )
    .await?;
    if !heap_idle.is_nan() {
        plugboard_tests::wait_for(
            "the operator's memory pass",
            Duration::from_secs(60),
            || async {
                let m = op.metrics().await.map_err(|e| e.to_string())?;
                if m.heap_releases > releases {
                    Ok(())
                } else {
                    Err(format!("{} releases", m.heap_releases))
                }
            },
        )
        .await?;
    }
    let rss_after_delete = h.op.rss_mib();
    let anon_rss_after_delete = h.op.anon_rss_mib();
    let after = h.op.metrics().await?;
    drop(watch);
    h.finish().await;
    Ok(ScaleRun {
        ready_s,
        cpu_s,
        idle_rss,
        peak_rss,
        ready_rss,
        heap_idle,
        heap_ready,
        heap_after_delete: after.heap_in_use,
        heap_free_after_delete: after.heap_free,
        delete_s,
        rss_after_delete,
        anon_rss_after_delete,
        cpu_delete_s,
        others_cpu,
        event_objects,
        event_occurrences,
        requests,
    })
}

fn median_of(runs: &[ScaleRun], f: impl Fn(&ScaleRun) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

fn print_scale(results: &BTreeMap<(Shape, usize), Vec<ScaleRun>>, sizes: &[usize]) {
    println!(
        "\n## Scaling (medians; ratio = this size ÷ {} in the same run)\n",
        sizes[0]
    );
    println!(
        "| scenario | all Ready s | ratio | writes/coupling (Events aside) | Event writes/coupling | reads/coupling | Event objects / occurrences per coupling | CPU s operator / API server / etcd / bench | delete all s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for ((shape, n), runs) in results {
        let ready = median_of(runs, |r| r.ready_s);
        let base = results
            .get(&(*shape, sizes[0]))
            .map(|b| median_of(b, |r| r.ready_s))
            .unwrap_or(f64::NAN);
        let writes = |events: bool| {
            median_of(runs, |r| {
                r.requests
                    .iter()
                    .filter(|((verb, resource), _)| {
                        apiserver::is_write(verb) && (resource == "events") == events
                    })
                    .map(|(_, v)| v)
                    .sum()
            })
        };
        let (event_writes, writes) = (writes(true), writes(false));
        let reads = median_of(runs, |r| {
            r.requests
                .iter()
                .filter(|((verb, _), _)| apiserver::is_read(verb))
                .map(|(_, v)| v)
                .sum()
        });
        println!(
            "| {n} {} | {ready:.1} | {:.1}× | {writes:.2} | {event_writes:.2} | {reads:.2} | {:.2} / {:.2} | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} |",
            shape.label(),
            ready / base,
            median_of(runs, |r| r.event_objects) / *n as f64,
            median_of(runs, |r| r.event_occurrences) / *n as f64,
            median_of(runs, |r| r.cpu_s),
            median_of(runs, |r| r.others_cpu.api_server),
            median_of(runs, |r| r.others_cpu.etcd),
            median_of(runs, |r| r.others_cpu.bench),
            median_of(runs, |r| r.delete_s),
        );
    }
    println!(
        "\n## Operator memory, MiB (medians; RSS from /proc, live heap and allocator-kept free heap from its /metrics)\n"
    );
    println!(
        "| scenario | RSS idle | RSS all Ready | peak RSS | RSS after delete (anonymous) | heap idle | heap all Ready | heap after delete | allocator free after delete |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for ((shape, n), runs) in results {
        println!(
            "| {n} {} | {:.1} | {:.1} | {:.1} | {:.1} ({:.1}) | {:.1} | {:.1} | {:.1} | {:.1} |",
            shape.label(),
            median_of(runs, |r| r.idle_rss),
            median_of(runs, |r| r.ready_rss),
            median_of(runs, |r| r.peak_rss),
            median_of(runs, |r| r.rss_after_delete),
            median_of(runs, |r| r.anon_rss_after_delete),
            median_of(runs, |r| r.heap_idle),
            median_of(runs, |r| r.heap_ready),
            median_of(runs, |r| r.heap_after_delete),
            median_of(runs, |r| r.heap_free_after_delete),
        );
    }
    println!(
        "\n## API requests per coupling while coupling, by verb and resource (medians; the API server's `apiserver_request_total`)\n"
    );
    let keys: std::collections::BTreeSet<(String, String)> = results
        .values()
        .flatten()
        .flat_map(|r| r.requests.keys().cloned())
        .filter(|(verb, _)| apiserver::is_write(verb) || apiserver::is_read(verb))
        .collect();
    let columns: Vec<&(Shape, usize)> = results.keys().collect();
    let header: Vec<String> = columns
        .iter()
        .map(|(s, n)| format!("{n} {}", s.label()))
        .collect();
    println!("| verb resource | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(columns.len()));
    for key in keys {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                format!(
                    "{:.2}",
                    median_of(&results[*c], |r| r
                        .requests
                        .get(&key)
                        .copied()
                        .unwrap_or(0.0))
                )
            })
            .collect();
        println!("| {} {} | {} |", key.0, key.1, cells.join(" | "));
    }
    println!(
        "\nEvent writes: the API server's creates and patches of Events (a repeat folded into a series is a patch). CPU s: user+system time from the first create to the last Ready of the operator, the API server, etcd and the benchmark's own client; the operator's delete CPU s:"
    );
    for ((shape, n), runs) in results {
        print!(
            "{n} {} {:.1}; ",
            shape.label(),
            median_of(runs, |r| r.cpu_delete_s)
        );
    }
    println!();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if args.sizes.is_empty() || args.runs == 0 {
        return Err("--sizes and --runs must not be empty".into());
    }
    let bin = operator::binary()?;
    // Starts the control plane (and builds it the first time on a machine).
    let started = Instant::now();
    let _env = plugboard_tests::env().await;
    eprintln!(
        "bench: control plane up in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if !args.no_latency {
        let rec = Recorder::start().await;
        let mut modes = vec![
            (Apparatus::None, Value::Null),
            (Apparatus::Http, json!({"endpoint": rec.url()})),
        ];
        let mut extra = Vec::new();
        let registry = if args.no_wasm {
            None
        } else {
            let registry = Registry::start().await?;
            let path =
                tokio::task::spawn_blocking(|| plugboard_tests::plugins::component("recorder"))
                    .await??;
            let bytes = std::fs::read(&path)?;
            let image = registry.image("bench/recorder:1");
            plugboard::oci::push_component(
                &image,
                &bytes,
                &plugboard::oci::RegistryAuth::Anonymous,
                &registry.plain_http_hosts(),
            )
            .await?;
            for host in registry.plain_http_hosts() {
                extra.push("--plain-http-registry".to_owned());
                extra.push(host);
            }
            modes.push((Apparatus::Wasm, json!({"wasm": {"image": image}})));
            Some(registry)
        };
        let mut results: BTreeMap<Apparatus, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for run in 0..args.runs {
            let h = Harness::start(&bin, "bench-latency", &extra).await?;
            for (mode, apparatus) in &modes {
                let (p50, p95) = latency(&h, *mode, apparatus.clone(), args.samples).await?;
                eprintln!(
                    "bench: run {run}: {}: p50 {p50:.1} ms, p95 {p95:.1} ms",
                    mode.label()
                );
                let entry = results.entry(*mode).or_default();
                entry.0.push(p50);
                entry.1.push(p95);
            }
            rec.clear();
            h.finish().await;
        }
        drop(registry);
        println!(
            "\n## Plug create → Ready, Socket ready ({} Plugs one after another per run, medians over {} runs)\n",
            args.samples, args.runs
        );
        println!("| apparatus | p50 ms | p95 ms | p50 ÷ no apparatus |");
        println!("|---|---|---|---|");
        let base = results
            .get(&Apparatus::None)
            .map(|r| median(r.0.clone()))
            .unwrap_or(f64::NAN);
        for (mode, (p50, p95)) in &results {
            let p50 = median(p50.clone());
            println!(
                "| {} | {p50:.1} | {:.1} | {:.2}× |",
                mode.label(),
                median(p95.clone()),
                p50 / base
            );
        }
    }

    if !args.no_scale {
        let control_plane = procs::ControlPlane::find();
        if !control_plane.found() {
            eprintln!(
                "bench: the API server and etcd are not this benchmark's processes; their CPU shows as 0"
            );
        }
        let mut results: BTreeMap<(Shape, usize), Vec<ScaleRun>> = BTreeMap::new();
        let largest = args.sizes.iter().copied().max().unwrap_or_default();
        if let Some(dir) = &args.apiserver_profile {
            std::fs::create_dir_all(dir)?;
        }
        for run in 0..args.runs {
            for &n in &args.sizes {
                for shape in [Shape::OneSocket, Shape::Pairs] {
                    if args.shape.is_some_and(|s| s != shape) {
                        continue;
                    }
                    let profile = args
                        .apiserver_profile
                        .as_ref()
                        .filter(|_| n == largest)
                        .map(|dir| {
                            let file = format!("apiserver-{}-{n}-run{run}.pprof", shape.slug());
                            (args.profile_seconds, dir.join(file))
                        });
                    let r = scale(&bin, &control_plane, shape, n, profile).await?;
                    eprintln!(
                        "bench: run {run}: {n} {}: all Ready in {:.1} s, CPU {:.1} s (API server {:.1}, etcd {:.1}, bench {:.1}), peak RSS {:.1} MiB (heap {:.1}), deleted in {:.1} s, RSS after {:.1} MiB (heap {:.1}, free {:.1})",
                        shape.label(),
                        r.ready_s,
                        r.cpu_s,
                        r.others_cpu.api_server,
                        r.others_cpu.etcd,
                        r.others_cpu.bench,
                        r.peak_rss,
                        r.heap_ready,
                        r.delete_s,
                        r.rss_after_delete,
                        r.heap_after_delete,
                        r.heap_free_after_delete
                    );
                    results.entry((shape, n)).or_default().push(r);
                }
            }
        }
        print_scale(&results, &args.sizes);
    }
    println!(
        "\noperator: `plugboard run` as a separate process with its default options; CPU and RSS from /proc (VmHWM = peak; anonymous = RssAnon, the rest is the binary's pages); heap from its `plugboard_heap_bytes` (glibc's mallinfo2; allocator free = freed chunks, resident or already given back). After-delete figures are taken once the operator's cache is empty and its memory pass (every 10 s) has run."
    );
    if !args.no_wasm && args.wasm_calls > 0 {
        // The WebAssembly call path in-process, against a loopback HTTP call of the same run.
        let wasm_bench = operator::sibling("wasm-bench")?;
        let status = std::process::Command::new(wasm_bench)
            .args([args.runs.to_string(), args.wasm_calls.to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("wasm-bench failed: {status}").into());
        }
    }
    Ok(())
}
