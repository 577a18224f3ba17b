//! A coupling scenario: a namespace, an in-process operator that manages only this test's
//! objects (by label, so tests run in parallel on one control plane without seeing each other),
//! and waits on conditions with deadlines.

use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Event, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use plugboard::controller::{IMPERSONATION_ALLOWED, IMPERSONATION_LABEL, Operator, Options};
use plugboard::crd::{DeferredResource, Plug, Socket};
use plugboard::metrics::Snapshot;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{TestEnv, TestNamespace, env, error_chain, wait_for};

/// The operator's RBAC rules as the Helm chart ships them.
const CHART_RULES: &str = include_str!("../../charts/plugboard/files/clusterrole-rules.yaml");
/// The rules the chart adds with `apparatus.viaApiServer`.
const CHART_PROXY_RULES: &str =
    include_str!("../../charts/plugboard/files/clusterrole-rules-api-proxy.yaml");

/// Label that assigns objects to one test's operator.
pub const TEST_LABEL: &str = "plugboard.dev/test-run";

/// How long a test waits for a state before failing. Generous: the suite runs many operators,
/// control planes and Go builds at once on small machines, and a deadline only bounds how
/// long a broken feature takes to be reported (no test asserts on time).
pub const DEADLINE: Duration = Duration::from_secs(120);

/// One test's world.
pub struct Scenario {
    /// The shared test environment.
    pub env: TestEnv,
    /// The test's namespace.
    pub ns: TestNamespace,
    /// This test's value of [`TEST_LABEL`].
    pub run: String,
    /// Operator options (short retry delays for tests).
    pub options: Options,
    operator: Option<Operator>,
    /// The operator's component cache and, beside it, its cache key (both survive
    /// [`Scenario::restart`], as on a real node).
    _state: tempfile::TempDir,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario").field("ns", &self.ns).finish()
    }
}

/// Options suited to tests: quick retries, short apparatus timeouts.
pub fn test_options(run: &str) -> Options {
    let mut options = Options {
        selector: Some(format!("{TEST_LABEL}={run}")),
        retry: Duration::from_secs(1),
        result_poll: Duration::from_millis(300),
        instance: format!("plugboard-{run}"),
        ..Default::default()
    };
    options.http.request_timeout = Duration::from_secs(2);
    options.http.connect_timeout = Duration::from_secs(2);
    options.http.retries = 1;
    options.http.retry_backoff_min = Duration::from_millis(50);
    options.http.retry_backoff_max = Duration::from_millis(100);
    options.pods.ready_timeout = Duration::from_secs(20);
    options.pods.reap_interval = Duration::from_millis(200);
    // The recorder apparatus and registries listen on loopback, which the default egress
    // policy refuses: tests allow it explicitly (the default stays deny).
    options.egress = plugboard::egress::EgressOptions::default().allowing_loopback();
    options
}

impl Scenario {
    /// A fresh namespace and an operator for it (not started: call [`Scenario::start`]).
    pub async fn new(prefix: &str) -> Self {
        // Operator logs go to the test's captured output (shown when a test fails); RUST_LOG
        // selects them, default warnings only, without the client's request failures while
        // the control plane starts.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(plugboard::logging::default_filter("warn"))
                }),
            )
            .with_test_writer()
            .try_init();
        let env = env().await;
        let ns = env
            .namespace(prefix)
            .await
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        let run = ns.name().to_owned();
        let state = tempfile::tempdir()
            .unwrap_or_else(|e| panic!("failed to make the operator's state folder: {e}"));
        let mut options = test_options(&run);
        options.cache_dir = state.path().join("cache");
        options.cache_key_file = Some(state.path().join("key").join("cache.key"));
        let sc = Scenario {
            options,
            env,
            ns,
            run,
            operator: None,
            _state: state,
        };
        // What a namespace's owner does for the ServiceAccount their Plugs use.
        sc.opt_in(sc.ns.name(), "default").await;
        sc
    }

    /// Another namespace for this test, whose `default` ServiceAccount opted in to plugboard
    /// acting as it.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let ns = self
            .env
            .namespace(prefix)
            .await
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        self.opt_in(ns.name(), "default").await;
        ns
    }

    /// Opts ServiceAccount `ns/name` in to plugboard acting as it (creating it if missing), as
    /// its namespace's owner would: `kubectl label serviceaccount <name>
    /// plugboard.dev/impersonation=allowed`.
    pub async fn opt_in(&self, ns: &str, name: &str) {
        let sa = json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "labels": {IMPERSONATION_LABEL: IMPERSONATION_ALLOWED}},
        });
        self.api::<ServiceAccount>(ns)
            .patch(
                name,
                &PatchParams::apply("plugboard-tests-opt-in"),
                &Patch::Apply(&sa),
            )
            .await
            .unwrap_or_else(|e| panic!("failed to opt in ServiceAccount {ns}/{name}: {e}"));
    }

    /// Withdraws ServiceAccount `ns/name`'s opt-in (removes the label).
    pub async fn opt_out(&self, ns: &str, name: &str) {
        let patch = json!({"metadata": {"labels": {IMPERSONATION_LABEL: null}}});
        self.api::<ServiceAccount>(ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("failed to opt out ServiceAccount {ns}/{name}: {e}"));
    }

    /// Starts the operator with the current options, as a ServiceAccount that has exactly the
    /// permissions the Helm chart grants the operator.
    pub async fn start(&mut self) {
        let config = self.operator_config().await;
        let client = Client::try_from(config.clone())
            .unwrap_or_else(|e| panic!("failed to create the operator's client: {e}"));
        self.operator = Some(Operator::spawn(client, config, self.options.clone()));
    }

    /// The operator's client configuration: ServiceAccount `plugboard-operator` in the test's
    /// namespace, bound to the chart's ClusterRole rules, once that grant is in force. For
    /// running the operator as a separate process (see the `faults` tests).
    pub async fn operator_config(&self) -> kube::Config {
        let mut rules: Vec<PolicyRule> = serde_saphyr::from_str(CHART_RULES)
            .unwrap_or_else(|e| panic!("the chart's ClusterRole rules do not parse: {e}"));
        if self.options.pods.via_api_server {
            let proxy: Vec<PolicyRule> = serde_saphyr::from_str(CHART_PROXY_RULES)
                .unwrap_or_else(|e| panic!("the chart's proxy rules do not parse: {e}"));
            rules.extend(proxy);
        }
        let name = format!("plugboard-operator-{}", self.run);
        let role = ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_owned(), self.run.clone())].into()),
                ..Default::default()
            },
            rules: Some(rules),
            ..Default::default()
        };
        let pp = PatchParams::apply("plugboard-tests").force();
        Api::<ClusterRole>::all(self.client())
            .patch(&name, &pp, &Patch::Apply(&role))
            .await
            .unwrap_or_else(|e| panic!("failed to create the operator's ClusterRole: {e}"));
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: "plugboard-operator".into(),
                namespace: Some(self.ns.name().to_owned()),
                ..Default::default()
            }]),
        };
        Api::<ClusterRoleBinding>::all(self.client())
            .patch(&name, &pp, &Patch::Apply(&binding))
            .await
            .unwrap_or_else(|e| panic!("failed to bind the operator's ClusterRole: {e}"));
        let config = self
            .env
            .service_account_config(self.ns.name(), "plugboard-operator")
            .await
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        // The authorizer learns of new bindings from a watch: wait until the grant is in force.
        let client = Client::try_from(config.clone())
            .unwrap_or_else(|e| panic!("failed to create the operator's client: {e}"));
        let plugs: Api<Plug> = Api::all(client);
        // Metadata only: a Plug the types cannot read (one test makes such a Plug) must not
        // fail this check for every other test.
        wait_for("the operator's RBAC to take effect", DEADLINE, || async {
            plugs
                .list_metadata(&Default::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        config
    }

    /// Stops the operator and starts a new one (a restart: fresh watches, caches and state).
    pub async fn restart(&mut self) {
        if let Some(op) = self.operator.take() {
            op.stop().await;
        }
        self.start().await;
    }

    /// The running operator's counters.
    pub fn metrics(&self) -> Snapshot {
        self.operator
            .as_ref()
            .map(|o| o.metrics().snapshot())
            .unwrap_or_default()
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        self.env.client()
    }

    /// An API handle in namespace `ns`.
    pub fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client(), ns)
    }

    fn object(&self, kind: &str, name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "plugboard.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "labels": {TEST_LABEL: self.run}},
            "spec": spec,
        })
    }

    /// Creates a Plug in `ns` from a JSON spec.
    pub async fn plug(&self, ns: &str, name: &str, spec: Value) -> Plug {
        let plug: Plug = serde_json::from_value(self.object("Plug", name, spec))
            .unwrap_or_else(|e| panic!("test Plug {name} is not valid: {e}"));
        self.api::<Plug>(ns)
            .create(&PostParams::default(), &plug)
            .await
            .unwrap_or_else(|e| panic!("failed to create Plug {name}: {e}"))
    }

    /// Creates a Socket in `ns` from a JSON spec.
    pub async fn socket(&self, ns: &str, name: &str, spec: Value) -> Socket {
        let socket: Socket = serde_json::from_value(self.object("Socket", name, spec))
            .unwrap_or_else(|e| panic!("test Socket {name} is not valid: {e}"));
        self.api::<Socket>(ns)
            .create(&PostParams::default(), &socket)
            .await
            .unwrap_or_else(|e| panic!("failed to create Socket {name}: {e}"))
    }

    /// Creates a DeferredResource in `ns` from a JSON spec.
    pub async fn deferred(&self, ns: &str, name: &str, spec: Value) -> DeferredResource {
        let dr: DeferredResource =
            serde_json::from_value(self.object("DeferredResource", name, spec))
                .unwrap_or_else(|e| panic!("test DeferredResource {name} is not valid: {e}"));
        self.api::<DeferredResource>(ns)
            .create(&PostParams::default(), &dr)
            .await
            .unwrap_or_else(|e| panic!("failed to create DeferredResource {name}: {e}"))
    }

    /// Merge-patches an object's spec (or anything else) with `patch`.
    pub async fn patch<K>(&self, ns: &str, name: &str, patch: Value) -> K
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>(ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("failed to patch {name}: {e}"))
    }

    /// Grants ServiceAccount `service_account` in `ns` the `rules`, through a Role and a
    /// RoleBinding named `name` — what a user does for the ServiceAccounts of their Plugs and
    /// Sockets.
    pub async fn grant(&self, ns: &str, service_account: &str, name: &str, rules: Vec<PolicyRule>) {
        let role = Role {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            rules: Some(rules),
        };
        self.api::<Role>(ns)
            .create(&PostParams::default(), &role)
            .await
            .unwrap_or_else(|e| panic!("failed to create Role {name}: {e}"));
        let binding = RoleBinding {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: name.to_owned(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: service_account.to_owned(),
                namespace: Some(ns.to_owned()),
                ..Default::default()
            }]),
        };
        self.api::<RoleBinding>(ns)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap_or_else(|e| panic!("failed to create RoleBinding {name}: {e}"));
    }

    /// Waits until `probe` accepts the object (absent objects are passed as `None`).
    pub async fn wait<K, F>(&self, ns: &str, name: &str, what: &str, probe: F) -> Option<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        F: Fn(Option<&K>) -> bool,
    {
        let api = self.api::<K>(ns);
        let probe = &probe;
        let found = wait_for(what, DEADLINE, || {
            let api = api.clone();
            async move {
                let obj = api.get_opt(name).await.map_err(|e| e.to_string())?;
                if probe(obj.as_ref()) {
                    Ok(obj)
                } else {
                    Err(format!("{obj:#?}"))
                }
            }
        })
        .await;
        match found {
            Ok(obj) => obj,
            Err(e) => panic!("{e}\nEvents in {ns}:\n{}", self.events_text(ns).await),
        }
    }

    /// The Events of namespace `ns`, one line each (what the operator said while a wait ran out).
    pub async fn events_text(&self, ns: &str) -> String {
        match self.api::<Event>(ns).list(&Default::default()).await {
            Ok(list) => list
                .items
                .iter()
                .map(|e| {
                    format!(
                        "  {} {} {}: {}",
                        e.type_.as_deref().unwrap_or_default(),
                        e.involved_object.name.as_deref().unwrap_or_default(),
                        e.reason.as_deref().unwrap_or_default(),
                        e.message.as_deref().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(error) => format!("  (could not list them: {error})"),
        }
    }

    /// Waits until a Plug is Ready and returns it.
    pub async fn wait_plug_ready(&self, ns: &str, name: &str) -> Plug {
        self.wait::<Plug, _>(ns, name, &format!("Plug {ns}/{name} to be Ready"), |p| {
            p.is_some_and(|p| plug_condition(p, "Ready").is_some_and(|c| c.status == "True"))
        })
        .await
        .unwrap_or_else(|| unreachable!("a Ready Plug exists"))
    }

    /// Waits until a Plug's Ready condition has `reason`, and returns it.
    pub async fn wait_plug_reason(&self, ns: &str, name: &str, reason: &str) -> Plug {
        self.wait::<Plug, _>(
            ns,
            name,
            &format!("Plug {ns}/{name} to show reason {reason}"),
            |p| p.is_some_and(|p| plug_condition(p, "Ready").is_some_and(|c| c.reason == reason)),
        )
        .await
        .unwrap_or_else(|| unreachable!("the Plug exists"))
    }

    /// Waits until a Socket is Ready and returns it.
    pub async fn wait_socket_ready(&self, ns: &str, name: &str) -> Socket {
        self.wait::<Socket, _>(ns, name, &format!("Socket {ns}/{name} to be Ready"), |s| {
            s.is_some_and(|s| socket_condition(s, "Ready").is_some_and(|c| c.status == "True"))
        })
        .await
        .unwrap_or_else(|| unreachable!("a Ready Socket exists"))
    }

    /// Waits until a Socket's Ready condition has `reason`, and returns it.
    pub async fn wait_socket_reason(&self, ns: &str, name: &str, reason: &str) -> Socket {
        self.wait::<Socket, _>(
            ns,
            name,
            &format!("Socket {ns}/{name} to show reason {reason}"),
            |s| s.is_some_and(|s| socket_condition(s, "Ready").is_some_and(|c| c.reason == reason)),
        )
        .await
        .unwrap_or_else(|| unreachable!("the Socket exists"))
    }

    /// Waits until a DeferredResource's Ready condition has `reason`, and returns it.
    pub async fn wait_deferred_reason(
        &self,
        ns: &str,
        name: &str,
        reason: &str,
    ) -> DeferredResource {
        self.wait::<DeferredResource, _>(
            ns,
            name,
            &format!("DeferredResource {ns}/{name} to show reason {reason}"),
            |d| {
                d.is_some_and(|d| {
                    deferred_condition(d, "Ready").is_some_and(|c| c.reason == reason)
                })
            },
        )
        .await
        .unwrap_or_else(|| unreachable!("the DeferredResource exists"))
    }

    /// Waits until the running operator has completed more reconciles than `before` of each
    /// kind asked for, so whatever triggered them has been fully handled.
    pub async fn wait_reconciled(&self, before: Snapshot, plugs: bool, sockets: bool) {
        wait_for("the operator to reconcile", DEADLINE, || async {
            let now = self.metrics();
            let plug_done = !plugs || now.plug_reconciles > before.plug_reconciles;
            let socket_done = !sockets || now.socket_reconciles > before.socket_reconciles;
            if plug_done && socket_done {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Scenario {
    /// The Warning Events with `reason` in `ns`.
    pub async fn warning_events(&self, ns: &str, reason: &str) -> Vec<Event> {
        self.api::<Event>(ns)
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("failed to list Events in {ns}: {e}"))
            .items
            .into_iter()
            .filter(|e| {
                e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason)
            })
            .collect()
    }

    /// Waits for a Warning Event with `reason` in `ns` about an object whose kind or name is
    /// `about` (any object when `None`), and returns it.
    pub async fn wait_warning(&self, ns: &str, reason: &str, about: Option<&str>) -> Event {
        let what = match about {
            Some(about) => format!("a Warning Event {reason} about {about}"),
            None => format!("a Warning Event {reason}"),
        };
        wait_for(&what, DEADLINE, || async {
            self.warning_events(ns, reason)
                .await
                .into_iter()
                .find(|e| {
                    about.is_none_or(|about| {
                        e.involved_object.kind.as_deref() == Some(about)
                            || e.involved_object.name.as_deref() == Some(about)
                    })
                })
                .ok_or_else(|| "none yet".to_owned())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates ConfigMap `name` with `data` directly, as a user would (not through plugboard).
    pub async fn create_config_map(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.api::<ConfigMap>(ns)
            .create(&PostParams::default(), &cm)
            .await
            .unwrap_or_else(|e| panic!("failed to create ConfigMap {ns}/{name}: {e}"));
    }

    /// Lets ServiceAccount `default` in `ns` get, create, patch and delete ConfigMaps, through
    /// a Role and RoleBinding named `name`.
    pub async fn grant_config_maps(&self, ns: &str, name: &str) {
        let rule = PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec![
                "get".into(),
                "create".into(),
                "patch".into(),
                "delete".into(),
            ],
            ..Default::default()
        };
        self.grant(ns, "default", name, vec![rule]).await;
    }
}

/// A condition of a Plug.
pub fn plug_condition<'a>(plug: &'a Plug, type_: &str) -> Option<&'a Condition> {
    plug.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// A condition of a Socket.
pub fn socket_condition<'a>(socket: &'a Socket, type_: &str) -> Option<&'a Condition> {
    socket
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// A condition of a DeferredResource.
pub fn deferred_condition<'a>(dr: &'a DeferredResource, type_: &str) -> Option<&'a Condition> {
    dr.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}
