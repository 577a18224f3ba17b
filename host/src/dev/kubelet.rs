//! A stand-in for the kubelet. The local control plane (of `plugboard dev` and the tests) has no
//! kubelet, no scheduler and no container runtime, so pods never run there: a [`FakeKubelet`]
//! plays the kubelet's part for the apparatus pods plugboard creates in one namespace. It
//! watches the pods that carry plugboard's apparatus label and, for each new one, writes the
//! status a real kubelet would (through the `status` subresource): either running and ready at
//! the kubelet's IP, or stuck pulling its image.
//!
//! The apparatus process itself is a loopback HTTP server (the tests' recorder, or the
//! apparatus `plugboard dev` serves), started before the Plug or Socket so that its port can be
//! written into the spec as the container's `containerPort` named `container`, as an image's
//! fixed port would be. The pod's IP is the address that server listens on (127.0.0.1 by
//! default), so plugboard, reading the IP from the pod's status and the port from its spec,
//! reaches it exactly as it would reach the container.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::apparatus::pod::OWNER_UID_LABEL;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::task::AbortHandle;

/// What the fake kubelet reports for the pods it sees from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodFate {
    /// Running, every container started and ready, `podIP` the kubelet's IP.
    Ready,
    /// Pending, every container waiting with reason `ErrImagePull` and the message a container
    /// runtime gives for an image that does not exist.
    ImagePullFailure,
}

/// A pod the fake kubelet handled.
#[derive(Debug, Clone)]
pub struct SeenPod {
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    /// The fate it was given.
    pub fate: PodFate,
    /// When the kubelet saw it first.
    pub seen: Instant,
    /// When its ready status was about to be written (only for [`PodFate::Ready`]).
    pub ready: Option<Instant>,
    /// When the kubelet saw it deleted.
    pub gone: Option<Instant>,
}

#[derive(Debug)]
struct State {
    fate: PodFate,
    pods: Vec<SeenPod>,
    errors: Vec<String>,
}

/// Stops the watch when the last handle goes away.
#[derive(Debug)]
struct TaskGuard(AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The kubelet's part for apparatus pods in one namespace. Cloning gives another handle; the
/// watch stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct FakeKubelet {
    state: Arc<Mutex<State>>,
    _task: Arc<TaskGuard>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeKubelet {
    /// Starts serving the apparatus pods of `namespace`, reporting them at 127.0.0.1.
    pub fn start(client: Client, namespace: &str) -> FakeKubelet {
        FakeKubelet::start_at(client, namespace, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Starts serving the apparatus pods of `namespace`, reporting them at `ip`, with `client`
    /// (an admin client: the kubelet writes pod status).
    pub fn start_at(client: Client, namespace: &str, ip: IpAddr) -> FakeKubelet {
        let state = Arc::new(Mutex::new(State {
            fate: PodFate::Ready,
            pods: Vec::new(),
            errors: Vec::new(),
        }));
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let task = tokio::spawn(run(api, ip, state.clone()));
        FakeKubelet {
            state,
            _task: Arc::new(TaskGuard(task.abort_handle())),
        }
    }

    /// What to report for pods seen from now on.
    pub fn set_fate(&self, fate: PodFate) {
        lock(&self.state).fate = fate;
    }

    /// The pods handled so far, in the order they appeared.
    pub fn pods(&self) -> Vec<SeenPod> {
        lock(&self.state).pods.clone()
    }

    /// Status writes or watch failures so far (a test fails on them rather than time out).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.state).errors.clone()
    }
}

async fn run(api: Api<Pod>, ip: IpAddr, state: Arc<Mutex<State>>) {
    let config = watcher::Config::default().labels(OWNER_UID_LABEL);
    let mut events = std::pin::pin!(watcher(api.clone(), config));
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                handle(&api, ip, &state, &pod).await;
            }
            Ok(watcher::Event::Delete(pod)) => {
                let uid = pod.uid().unwrap_or_default();
                if let Some(seen) = lock(&state).pods.iter_mut().find(|p| p.uid == uid) {
                    seen.gone.get_or_insert_with(Instant::now);
                }
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => lock(&state).errors.push(format!("watch: {e}")),
        }
    }
}

/// Acts on a pod the first time it is seen: writes the status of its fate.
async fn handle(api: &Api<Pod>, ip: IpAddr, state: &Mutex<State>, pod: &Pod) {
    let uid = pod.uid().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        return;
    }
    let fate = {
        let mut state = lock(state);
        if state.pods.iter().any(|p| p.uid == uid) {
            return;
        }
        let fate = state.fate;
        state.pods.push(SeenPod {
            name: pod.name_any(),
            uid: uid.clone(),
            fate,
            seen: Instant::now(),
            ready: None,
            gone: None,
        });
        fate
    };
    let status = status_for(pod, fate, ip);
    // Taken before the write: the operator may see the Ready status (and call the pod) before
    // the write's response reaches the kubelet.
    let writing = Instant::now();
    let written = api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await;
    let mut state = lock(state);
    match written {
        Ok(_) => {
            if fate == PodFate::Ready
                && let Some(seen) = state.pods.iter_mut().find(|p| p.uid == uid)
            {
                seen.ready = Some(writing);
            }
        }
        // A pod deleted before its status was written is not the kubelet's problem.
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(e) => state
            .errors
            .push(format!("status of pod {}: {e}", pod.name_any())),
    }
}

/// The status a kubelet would report for `pod` with `fate`.
fn status_for(pod: &Pod, fate: PodFate, ip: IpAddr) -> Value {
    let now = Timestamp::now().to_string();
    let containers: Vec<(String, String)> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect();
    let names: Vec<&str> = containers.iter().map(|(n, _)| n.as_str()).collect();
    match fate {
        PodFate::Ready => json!({
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": containers.iter().map(|(name, image)| json!({
                "name": name, "image": image, "imageID": "", "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": now}},
            })).collect::<Vec<_>>(),
        }),
        PodFate::ImagePullFailure => json!({
            "phase": "Pending",
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                 "message": format!("containers with unready status: [{}]", names.join(" ")),
                 "lastTransitionTime": now},
            ],
            "containerStatuses": containers.iter().map(|(name, image)| json!({
                "name": name, "image": image, "imageID": "", "ready": false, "started": false,
                "restartCount": 0, "state": {"waiting": {
                    "reason": "ErrImagePull",
                    "message": format!(
                        "failed to pull and unpack image \"{image}\": failed to resolve \
                         reference \"{image}\": {image}: not found"
                    ),
                }},
            })).collect::<Vec<_>>(),
        }),
    }
}
