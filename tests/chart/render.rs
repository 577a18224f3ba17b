//! `helm lint` and `helm template`: what the chart renders for its defaults and for other
//! values, and which values it refuses.

use std::path::Path;

use serde_json::{Value, json};

use crate::helm::{self, Manifests, ci_values};

const RELEASE: &str = "plugboard";
const NAMESPACE: &str = "plugboard-system";

/// A values file as the test reads it.
fn values(name: &str) -> Value {
    let text = std::fs::read_to_string(ci_values(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// A chart rules file, parsed.
fn rules_file(name: &str) -> Value {
    let text = std::fs::read_to_string(helm::chart().join("files").join(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// Whether every label of `selector` is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The volume mounted at the longest mount path that is a prefix of `path`.
fn volume_of<'a>(m: &'a Manifests, path: &str) -> &'a Value {
    let mount = m.container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| path.starts_with(v["mountPath"].as_str().unwrap()))
        .max_by_key(|v| v["mountPath"].as_str().unwrap().len())
        .unwrap_or_else(|| panic!("no volume holds {path}"));
    let name = &mount["name"];
    m.pod_spec()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == *name)
        .unwrap()
}

fn arg_value<'a>(m: &'a Manifests, flag: &str) -> Option<&'a str> {
    m.args()
        .into_iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
}

fn number(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|_| panic!("{s:?} is not a number"))
}

/// The grace period covers the operator's shutdown grace plus the longest hook.
fn assert_grace_covers_the_longest_hook(m: &Manifests) -> u64 {
    let grace = m.pod_spec()["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let shutdown = number(m.env_value("PLUGBOARD_SHUTDOWN_GRACE_SECONDS"));
    let http = number(arg_value(m, "--http-timeout").unwrap());
    let wasm = number(arg_value(m, "--wasm-max-timeout-ms").unwrap()).div_ceil(1000);
    assert!(
        grace > shutdown + http.max(wasm),
        "grace {grace} s must exceed shutdown {shutdown} s + the longest hook ({http} s HTTP, {wasm} s WASM)"
    );
    grace
}

/// What every render must keep, whatever the values.
fn assert_hardened(m: &Manifests, uid: u64) {
    let pod = m.pod_spec();
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], uid);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let c = m.container();
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], uid);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(m.args().first() == Some(&"run"), "{:?}", m.args());

    // No automatic token: one projected, short-lived token, read-only, where clients look.
    assert_eq!(pod["automountServiceAccountToken"], false);
    let sa = m.one("ServiceAccount");
    assert_eq!(sa["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    let token_path = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    let token = volume_of(m, token_path);
    let sources = token["projected"]["sources"].as_array().unwrap();
    let sat = sources
        .iter()
        .find_map(|s| s.get("serviceAccountToken"))
        .expect("a projected service account token");
    assert!(sat["expirationSeconds"].as_u64().unwrap() <= 3607);
    let token_mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == token["name"])
        .unwrap();
    assert_eq!(token_mount["readOnly"], true);
    // Only volume kinds the restricted Pod Security Standard allows.
    for v in pod["volumes"].as_array().unwrap() {
        let kinds: Vec<&String> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "name")
            .collect();
        assert!(
            kinds
                .iter()
                .all(|k| ["emptyDir", "projected", "configMap", "secret"].contains(&k.as_str())),
            "volume {v}"
        );
    }

    // The cache and its key are on writable emptyDirs, apart.
    let cache = volume_of(m, m.env_value("PLUGBOARD_CACHE_DIR"));
    let key = volume_of(m, m.env_value("PLUGBOARD_CACHE_KEY_FILE"));
    assert!(cache["emptyDir"].is_object() && key["emptyDir"].is_object());
    assert_ne!(cache["name"], key["name"], "the key is never in the cache");

    // Probes on the port the health server listens on.
    let addr = m.env_value("PLUGBOARD_HEALTH_ADDR");
    let port: u64 = number(addr.rsplit(':').next().unwrap());
    let ports = c["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["containerPort"], port);
    let port_name = &ports[0]["name"];
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], *port_name, "{probe}");
    }
    assert_grace_covers_the_longest_hook(m);

    // RBAC: the shipped rules, bound to the pod's ServiceAccount.
    let role = m.one("ClusterRole");
    let rules = role["rules"].as_array().unwrap();
    for rule in rules_file("clusterrole-rules.yaml").as_array().unwrap() {
        assert!(rules.contains(rule), "missing {rule}");
    }
    let binding = m.one("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}])
    );
}

#[test]
fn chart_lints_with_default_and_ci_values() {
    let chart = helm::chart().display().to_string();
    for values in [
        None,
        Some("full-values.yaml"),
        Some("single-replica-values.yaml"),
    ] {
        let mut args = vec!["lint".to_owned(), "--strict".to_owned(), chart.clone()];
        if let Some(v) = values {
            args.extend(["--values".to_owned(), ci_values(v).display().to_string()]);
        }
        let out = helm::run(&args);
        assert!(out.ok, "helm {args:?}:\n{}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn default_values_render_a_hardened_operator_with_two_replicas_and_a_disruption_budget() {
    let m = helm::template(RELEASE, NAMESPACE, &[]);
    assert_hardened(&m, 65532);
    let deployment = m.one("Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(helm::chart().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        m.container()["image"],
        format!(
            "ghcr.io/plugboard-dev/plugboard:{}",
            chart["appVersion"].as_str().unwrap()
        )
    );

    // Two replicas: leader election on, its Lease rules bound in the release namespace, and a
    // disruption budget keeping one through drains.
    assert_eq!(m.env_value("PLUGBOARD_LEADER_ELECT"), "true");
    assert_eq!(m.env_value("PLUGBOARD_LEADER_ELECT_LEASE"), "plugboard");
    assert_eq!(m.env_value("PLUGBOARD_LEADER_ELECT_LEASE_SECONDS"), "15");
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        assert_eq!(
            m.env(name).unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
            path
        );
    }
    let role = m.one("Role");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(role["rules"], rules_file("leader-election-rules.yaml"));
    let lease_rule = json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                            "verbs": ["get", "create", "update"]});
    assert!(
        role["rules"].as_array().unwrap().contains(&lease_rule),
        "{}",
        role["rules"]
    );
    let binding = m.one("RoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["name"],
        m.pod_spec()["serviceAccountName"]
    );
    let pdb = m.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels));

    // The memory budget is the container's memory limit.
    assert_eq!(
        m.env("PLUGBOARD_MEMORY_BUDGET_MIB").unwrap()["valueFrom"]["resourceFieldRef"],
        json!({"resource": "limits.memory", "divisor": "1Mi"})
    );
    assert_eq!(m.container()["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(m.env_value("PLUGBOARD_LOG_FORMAT"), "json");
    assert_eq!(m.env_value("PLUGBOARD_EGRESS_DENY_UNLISTED"), "false");
    assert!(m.env("PLUGBOARD_EGRESS_ALLOW").is_none());
    assert!(m.env("PLUGBOARD_SIGNATURE_PUBLIC_KEY_FILE").is_none());
    assert!(m.env("SSL_CERT_DIR").is_none());

    // Metrics: a Service on the health port; no ServiceMonitor unless asked for.
    let service = m.one("Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "health");
    assert!(selects(&service["spec"]["selector"], pod_labels));
    assert!(m.of_kind("ServiceMonitor").is_empty());

    // NetworkPolicy: ingress only to the health port; egress to DNS, the API server and
    // registries, and apparatuses anywhere (plugboard's own egress policy narrows those).
    let np = m.one("NetworkPolicy");
    assert!(selects(
        &np["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        np["spec"]["ingress"],
        json!([{"ports": [{"protocol": "TCP", "port": "health"}]}])
    );
    let egress = np["spec"]["egress"].as_array().unwrap();
    assert!(egress.contains(
        &json!({"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]})
    ));
    assert!(egress.contains(
        &json!({"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]})
    ));

    // The CRDs, kept on uninstall.
    let crds = m.of_kind("CustomResourceDefinition");
    assert_eq!(crds.len(), 3);
    for crd in crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    // Nothing the values did not ask for.
    assert!(m.of_kind("ConfigMap").is_empty() && m.of_kind("Secret").is_empty());
}

#[test]
fn every_value_reaches_the_operator_and_its_objects() {
    let v = values("full-values.yaml");
    let m = helm::template(RELEASE, NAMESPACE, &[&ci_values("full-values.yaml")]);
    assert_hardened(&m, 10001);
    let pod = m.pod_spec();
    let c = m.container();
    assert_eq!(m.one("Deployment")["spec"]["replicas"], 3);
    assert_eq!(m.one("PodDisruptionBudget")["spec"]["minAvailable"], 2);
    assert!(m.of_kind("CustomResourceDefinition").is_empty());
    assert_eq!(c["image"], "registry.example/plugboard:v9.9.9");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(pod["imagePullSecrets"], v["imagePullSecrets"]);

    for (env, value) in [
        ("WATCH_NAMESPACE", "team-a"),
        ("PLUGBOARD_SELECTOR", "plugboard.dev/shard=a"),
        ("MAX_CONCURRENT_RECONCILES", "8"),
        ("PLUGBOARD_PLUG_CONCURRENCY", "32"),
        ("PLUGBOARD_HOOK_CALLS_PER_SOCKET", "2"),
        ("PLUGBOARD_RETRY_MAX_SECONDS", "60"),
        ("PLUGBOARD_RECONCILE_DEADLINE_SECONDS", "120"),
        ("PLUGBOARD_RECHECK_SECONDS", "600"),
        ("PLUGBOARD_APPARATUS_READY_TIMEOUT", "60"),
        ("PLUGBOARD_APPARATUS_VIA_API_SERVER", "true"),
        ("PLUGBOARD_LOG_FORMAT", "human"),
        ("PLUGBOARD_LOG_LEVEL", "debug"),
        ("PLUGBOARD_HEALTH_ADDR", "[::]:9090"),
        ("PLUGBOARD_SHUTDOWN_GRACE_SECONDS", "40"),
        ("PLUGBOARD_LEADER_ELECT", "true"),
        ("PLUGBOARD_LEADER_ELECT_LEASE", "plugboard-shard-a"),
        ("PLUGBOARD_LEADER_ELECT_LEASE_SECONDS", "20"),
        (
            "PLUGBOARD_PLAIN_HTTP_REGISTRIES",
            "registry.internal:5000,10.0.0.5:5001",
        ),
        ("PLUGBOARD_EGRESS_ALLOW", "10.96.0.0/12,*.example.com"),
        ("PLUGBOARD_EGRESS_DENY", "169.254.0.0/16"),
        ("PLUGBOARD_EGRESS_DENY_UNLISTED", "true"),
        ("PLUGBOARD_MEMORY_BUDGET_MIB", "2048"),
        ("PLUGBOARD_REQUIRE_SIGNATURES", "true"),
    ] {
        assert_eq!(m.env_value(env), value, "{env}");
    }
    for (flag, value) in [
        ("--http-timeout", "45"),
        ("--wasm-timeout-ms", "1000"),
        ("--wasm-max-timeout-ms", "90000"),
        ("--wasm-memory-mib", "32"),
        ("--wasm-max-memory-mib", "128"),
    ] {
        assert_eq!(arg_value(&m, flag), Some(value), "{flag}");
    }
    // 40 s shutdown grace + 90 s, the longest WebAssembly deadline + 5 s to exit.
    assert_eq!(assert_grace_covers_the_longest_hook(&m), 135);

    // The signature key and the CA bundle: chart-made objects, mounted where the env says.
    let key_file = m.env_value("PLUGBOARD_SIGNATURE_PUBLIC_KEY_FILE");
    let key_volume = volume_of(&m, key_file);
    let secret = m.one("Secret");
    assert_eq!(
        key_volume["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    let key_name = Path::new(key_file).file_name().unwrap().to_str().unwrap();
    assert_eq!(secret["stringData"][key_name], v["signatures"]["publicKey"]);
    let ca_dir = m.env_value("SSL_CERT_DIR");
    let ca = m.one("ConfigMap");
    assert_eq!(
        volume_of(&m, &format!("{ca_dir}/ca.crt"))["configMap"]["name"],
        ca["metadata"]["name"]
    );
    assert_eq!(ca["data"]["ca.crt"], v["registries"]["caBundle"]["pem"]);
    assert_eq!(
        m.env_value("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
        "the public roots stay trusted"
    );

    // Placement and resources as given.
    for key in [
        "nodeSelector",
        "tolerations",
        "affinity",
        "topologySpreadConstraints",
        "priorityClassName",
    ] {
        assert_eq!(pod[key], v[key], "{key}");
    }
    assert_eq!(c["resources"], v["resources"]);
    let template_meta = &m.one("Deployment")["spec"]["template"]["metadata"];
    assert_eq!(template_meta["annotations"]["example.com/team"], "platform");
    assert_eq!(template_meta["labels"]["example.com/tier"], "control");
    assert_eq!(
        volume_of(&m, m.env_value("PLUGBOARD_CACHE_DIR"))["emptyDir"]["sizeLimit"],
        "4Gi"
    );

    // viaApiServer grants the pod proxy.
    let rules = m.one("ClusterRole")["rules"].as_array().unwrap().clone();
    for rule in rules_file("clusterrole-rules-api-proxy.yaml")
        .as_array()
        .unwrap()
    {
        assert!(rules.contains(rule), "missing {rule}");
    }

    // The ServiceMonitor scrapes the metrics Service's port.
    let service = m.one("Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 9091);
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    let sm = m.one("ServiceMonitor");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert!(selects(
        &sm["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!([NAMESPACE])
    );
    assert_eq!(
        sm["spec"]["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"}])
    );

    // NetworkPolicy narrowed as configured: no allow-everything rule left.
    let np = &m.one("NetworkPolicy")["spec"];
    assert_eq!(np["ingress"][0]["from"], v["networkPolicy"]["metricsFrom"]);
    let egress = np["egress"].as_array().unwrap();
    assert!(!egress.contains(&json!({})), "{egress:?}");
    let tcp = |port: u64| json!({"protocol": "TCP", "port": port});
    let to = |cidr: &str| json!([{"ipBlock": {"cidr": cidr}}]);
    for expected in [
        json!({"to": to("10.0.0.1/32"), "ports": [tcp(6443)]}),
        json!({"to": to("203.0.113.0/24"), "ports": [tcp(443)]}),
        json!({"ports": [tcp(5000), tcp(5001)]}),
        json!({"to": to("10.0.0.0/8"), "ports": [tcp(8080)]}),
        v["networkPolicy"]["extraEgress"][0].clone(),
    ] {
        assert!(
            egress.contains(&expected),
            "missing {expected} in {egress:?}"
        );
    }
}

#[test]
fn one_replica_without_leader_election_recreates_and_has_no_disruption_budget() {
    let m = helm::template(
        RELEASE,
        NAMESPACE,
        &[&ci_values("single-replica-values.yaml")],
    );
    assert_hardened(&m, 65532);
    let spec = &m.one("Deployment")["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"], json!({"type": "Recreate"}));
    assert_eq!(m.env_value("PLUGBOARD_LEADER_ELECT"), "false");
    assert!(m.env("PLUGBOARD_LEADER_ELECT_LEASE").is_none());
    for kind in [
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "Service",
        "ServiceMonitor",
        "ConfigMap",
        "Secret",
    ] {
        assert!(m.of_kind(kind).is_empty(), "{kind} rendered");
    }
    assert_eq!(m.pod_spec()["terminationGracePeriodSeconds"], 120);
    // The CA bundle and the key from objects managed outside the chart.
    let ca = volume_of(&m, &format!("{}/x", m.env_value("SSL_CERT_DIR")));
    assert_eq!(ca["configMap"]["name"], "corporate-ca");
    let key_file = m.env_value("PLUGBOARD_SIGNATURE_PUBLIC_KEY_FILE");
    assert!(key_file.ends_with("/key.pem"), "{key_file}");
    let key = volume_of(&m, key_file);
    assert_eq!(
        key["secret"],
        json!({"secretName": "component-signing", "items": [{"key": "key.pem", "path": "key.pem"}]})
    );
}

#[test]
fn values_breaking_the_schema_fail_with_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("replicas: two", "/replicas"),
        ("replicass: 2", "replicass"),
        ("log: {format: xml}", "/log/format"),
        // Two operators without leader election would run every hook twice.
        ("leaderElection: {enabled: false}", "/replicas"),
        ("signatures: {required: true}", "/signatures"),
        // No memory limit and no explicit budget: nothing to derive the budget from.
        ("resources: {limits: {memory: null}}", "memory"),
        ("memoryBudgetMib: 32", "/memoryBudgetMib"),
        (
            "egress: {allow: ['10.0.0.0/8, 192.168.0.0/16']}",
            "/egress/allow/0",
        ),
        (
            "registries: {plainHttp: ['http://registry:5000']}",
            "/registries/plainHttp/0",
        ),
        (
            "networkPolicy: {apiServer: {ports: [70000]}}",
            "/networkPolicy/apiServer/ports/0",
        ),
        ("health: {port: 80}", "/health/port"),
        (
            "metrics: {serviceMonitor: {enabled: yes please}}",
            "/metrics/serviceMonitor/enabled",
        ),
    ];
    for (i, (yaml, offending)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let out = helm::run(helm::template_args(RELEASE, NAMESPACE, &[&file]));
        assert!(!out.ok, "{yaml:?} was accepted:\n{}", out.stdout);
        assert!(
            out.stderr
                .contains("values don't meet the specifications of the schema")
                && out.stderr.contains(offending),
            "{yaml:?} should fail naming {offending}:\n{}",
            out.stderr
        );
    }
}
