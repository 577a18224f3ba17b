//! The API server's own request counters (`apiserver_request_total` from `/metrics`), by verb
//! and resource, so that what the operator costs the API server is counted where it is paid.

use std::collections::BTreeMap;

/// Request counts by `(verb, resource[/subresource])`.
pub type Counts = BTreeMap<(String, String), f64>;

/// Resources the operator works on; everything else (leases, the controller manager's own
/// traffic) is left out of the figures.
pub const RESOURCES: &[&str] = &[
    "plugs",
    "plugs/status",
    "sockets",
    "sockets/status",
    "secrets",
    "events",
    "namespaces",
    "serviceaccounts",
    "configmaps",
    "pods",
];

/// Reads the counters now.
pub async fn counts(client: &kube::Client) -> Result<Counts, Box<dyn std::error::Error>> {
    let request = hyper::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    Ok(parse(&text))
}

fn label<'a>(labels: &'a str, key: &str) -> &'a str {
    let needle = format!("{key}=\"");
    labels
        .split(',')
        .find_map(|l| l.trim().strip_prefix(needle.as_str()))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or("")
}

/// Sums `apiserver_request_total` by verb and resource.
pub fn parse(text: &str) -> Counts {
    let mut out = Counts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let verb = label(labels, "verb");
        let resource = label(labels, "resource");
        let sub = label(labels, "subresource");
        let resource = if sub.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}/{sub}")
        };
        if !RESOURCES.contains(&resource.as_str()) {
            continue;
        }
        *out.entry((verb.to_owned(), resource)).or_default() += value;
    }
    out
}

/// `after - before`, dropping zeroes.
pub fn delta(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or_default();
            (d > 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

/// Whether a verb writes.
pub fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
    )
}

/// Whether a verb reads (watches are long-lived and left out).
pub fn is_read(verb: &str) -> bool {
    matches!(verb, "GET" | "LIST")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_verb_and_resource_and_leaves_out_other_resources() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="201",component="apiserver",dry_run="",group="plugboard.dev",resource="plugs",scope="resource",subresource="",verb="POST",version="v1alpha1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="plugboard.dev",resource="plugs",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 5
apiserver_request_total{code="409",component="apiserver",dry_run="",group="plugboard.dev",resource="plugs",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 9
"#;
        let counts = parse(text);
        assert_eq!(counts[&("POST".into(), "plugs".into())], 3.0);
        assert_eq!(counts[&("APPLY".into(), "plugs/status".into())], 6.0);
        assert_eq!(counts.len(), 2);
    }
}
