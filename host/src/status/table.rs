//! The report `plugboard status` prints, built from Plugs, Sockets and hook Events without any
//! I/O, and rendered as a table a person reads or as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use serde::{Serialize, Serializer};

use crate::crd::{Plug, Socket, conditions};

/// The longest message shown in the table; JSON carries it whole.
const MESSAGE_WIDTH: usize = 80;

/// Couplings grouped by Socket: what `plugboard status` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// One group per Socket that exists or that a Plug names, sorted by namespace and name.
    pub sockets: Vec<SocketGroup>,
}

/// A Socket and the Plugs that name it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketGroup {
    /// The Socket's namespace.
    pub namespace: String,
    /// The Socket's name.
    pub name: String,
    /// The Socket's state, `None` when no such Socket was found.
    pub socket: Option<Entry>,
    /// The Plugs naming this Socket, sorted by namespace and name.
    pub plugs: Vec<Entry>,
}

/// The state of one Plug or Socket.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The `Ready` condition's status (`True`, `False`, `Unknown`), `None` before the operator
    /// wrote one.
    pub ready: Option<String>,
    /// The reason of the `Ready` condition when it is not `True`, else the lifecycle phase (the
    /// `Coupled` condition's reason).
    pub reason: Option<String>,
    /// The `Ready` condition's message.
    pub message: Option<String>,
    /// The last hook that ran for it, from its Normal Events.
    pub last_hook: Option<LastHook>,
    /// When it was created.
    #[serde(serialize_with = "timestamp")]
    pub created: Option<Timestamp>,
}

/// A hook that ran, as its Event says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastHook {
    /// The Event's reason: the side and the lifecycle point, e.g. `PlugCoupled`.
    pub hook: String,
    /// When it last ran.
    #[serde(serialize_with = "timestamp")]
    pub time: Option<Timestamp>,
}

fn timestamp<S: Serializer>(time: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => s.serialize_str(&time.to_string()),
        None => s.serialize_none(),
    }
}

/// Whether `reason` is the reason of a hook's Normal Event (`PlugCoupled`, `SocketDeleted`, …).
pub fn is_hook_reason(reason: &str) -> bool {
    let point = reason
        .strip_prefix("Plug")
        .or_else(|| reason.strip_prefix("Socket"));
    matches!(
        point,
        Some("Created" | "Coupled" | "Updated" | "Decoupled" | "Deleted")
    )
}

/// When an Event last happened: its series' last occurrence, else its event time, else its
/// last timestamp, else when it was created.
fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The latest hook Event of each object, by UID.
fn last_hooks(events: &[Event]) -> BTreeMap<String, LastHook> {
    let mut latest: BTreeMap<String, LastHook> = BTreeMap::new();
    for event in events {
        let (Some(uid), Some(reason)) = (&event.involved_object.uid, &event.reason) else {
            continue;
        };
        if event.type_.as_deref() != Some("Normal") || !is_hook_reason(reason) {
            continue;
        }
        let time = event_time(event);
        let newer = latest.get(uid).is_none_or(|seen| time >= seen.time);
        if newer {
            latest.insert(
                uid.clone(),
                LastHook {
                    hook: reason.clone(),
                    time,
                },
            );
        }
    }
    latest
}

fn entry(
    meta: &kube::api::ObjectMeta,
    conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    hooks: &BTreeMap<String, LastHook>,
) -> Entry {
    let ready = conditions::find(conds, conditions::types::READY);
    let coupled = conditions::find(conds, conditions::types::COUPLED);
    let reason = match ready {
        Some(r) if r.status != "True" => Some(r.reason.clone()),
        _ => coupled.or(ready).map(|c| c.reason.clone()),
    };
    Entry {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        ready: ready.map(|c| c.status.clone()),
        reason,
        message: ready.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
        last_hook: meta.uid.as_ref().and_then(|uid| hooks.get(uid)).cloned(),
        created: meta.creation_timestamp.as_ref().map(|t| t.0),
    }
}

/// Groups `plugs` under the Socket each names (`sockets` holds those found).
pub fn build(sockets: &[Socket], plugs: &[Plug], events: &[Event]) -> Report {
    let hooks = last_hooks(events);
    let mut groups: BTreeMap<(String, String), SocketGroup> = BTreeMap::new();
    for socket in sockets {
        let status = socket.status.clone().unwrap_or_default();
        let entry = entry(&socket.metadata, &status.conditions, &hooks);
        groups.insert(
            (entry.namespace.clone(), entry.name.clone()),
            SocketGroup {
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
                socket: Some(entry),
                plugs: Vec::new(),
            },
        );
    }
    for plug in plugs {
        let status = plug.status.clone().unwrap_or_default();
        let entry = entry(&plug.metadata, &status.conditions, &hooks);
        let namespace = plug
            .spec
            .socket
            .namespace
            .clone()
            .unwrap_or_else(|| plug.namespace().unwrap_or_default());
        let name = plug.spec.socket.name.clone();
        groups
            .entry((namespace.clone(), name.clone()))
            .or_insert_with(|| SocketGroup {
                namespace,
                name,
                socket: None,
                plugs: Vec::new(),
            })
            .plugs
            .push(entry);
    }
    let mut sockets: Vec<SocketGroup> = groups.into_values().collect();
    for group in &mut sockets {
        group
            .plugs
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    }
    Report { sockets }
}

/// Whether every Plug and Socket in the report is `Ready=True`, and there is at least one.
pub fn all_ready(report: &Report) -> bool {
    let entries: Vec<Option<&Entry>> = report
        .sockets
        .iter()
        .flat_map(|g| std::iter::once(g.socket.as_ref()).chain(g.plugs.iter().map(Some)))
        .collect();
    !entries.is_empty()
        && entries
            .iter()
            .all(|e| e.is_some_and(|e| e.ready.as_deref() == Some("True")))
}

/// A short age, as kubectl prints it: `45s`, `12m`, `5h`, `3d`.
pub fn age(since: Timestamp, now: Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(since.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 120 * 60 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Text from the cluster made safe for a terminal: control characters (escape sequences
/// included) are shown escaped, never interpreted.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Renders the report as a table: one row per Socket, then one per Plug naming it (`└ name`).
/// `with_namespace` adds a NAMESPACE column (for all namespaces); `now` is the clock ages are
/// measured against.
pub fn render(report: &Report, with_namespace: bool, now: Timestamp) -> String {
    if report.sockets.is_empty() {
        return "No Plugs or Sockets found.\n".to_owned();
    }
    let dash = || "-".to_owned();
    let mut rows: Vec<Vec<String>> = vec![
        [
            "NAMESPACE",
            "SOCKET",
            "PLUG",
            "READY",
            "REASON",
            "LAST HOOK",
            "AGE",
            "MESSAGE",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let row = |namespace: &str, socket: String, plug: String, entry: Option<&Entry>| {
        let Some(e) = entry else {
            return vec![
                clean(namespace),
                socket,
                plug,
                dash(),
                dash(),
                dash(),
                dash(),
                "no such Socket".to_owned(),
            ];
        };
        let last_hook = e.last_hook.as_ref().map_or_else(dash, |h| match h.time {
            Some(time) => format!("{} {} ago", clean(&h.hook), age(time, now)),
            None => clean(&h.hook),
        });
        let message = match (e.ready.as_deref(), &e.message) {
            (Some("True"), _) | (_, None) => String::new(),
            (_, Some(m)) => shorten(&clean(m), MESSAGE_WIDTH),
        };
        vec![
            clean(namespace),
            socket,
            plug,
            e.ready.as_deref().map_or_else(dash, clean),
            e.reason.as_deref().map_or_else(dash, clean),
            last_hook,
            e.created.map_or_else(dash, |t| age(t, now)),
            message,
        ]
    };
    for group in &report.sockets {
        rows.push(row(
            &group.namespace,
            clean(&group.name),
            dash(),
            group.socket.as_ref(),
        ));
        for plug in &group.plugs {
            // A Plug from another namespace is named with it.
            let name = if plug.namespace == group.namespace {
                clean(&plug.name)
            } else {
                format!("{}/{}", clean(&plug.namespace), clean(&plug.name))
            };
            rows.push(row(
                &plug.namespace,
                String::new(),
                format!("└ {name}"),
                Some(plug),
            ));
        }
    }
    let skip = usize::from(!with_namespace);
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate().skip(skip) {
            if i + 1 == columns {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
    use serde_json::json;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(at(0)),
            observed_generation: None,
        }
    }

    fn socket(name: &str, uid: &str, conds: Vec<Condition>) -> Socket {
        let mut s: Socket = serde_json::from_value(json!({
            "apiVersion": "plugboard.dev/v1alpha1", "kind": "Socket",
            "metadata": {"name": name, "namespace": "ns", "uid": uid,
                         "creationTimestamp": at(0).to_string()},
            "spec": {},
        }))
        .unwrap();
        s.status = Some(crate::crd::SocketStatus {
            conditions: conds,
            ..Default::default()
        });
        s
    }

    fn plug(name: &str, uid: &str, socket: &str, conds: Vec<Condition>) -> Plug {
        let mut p: Plug = serde_json::from_value(json!({
            "apiVersion": "plugboard.dev/v1alpha1", "kind": "Plug",
            "metadata": {"name": name, "namespace": "ns", "uid": uid,
                         "creationTimestamp": at(30).to_string()},
            "spec": {"socket": {"name": socket}},
        }))
        .unwrap();
        p.status = Some(crate::crd::PlugStatus {
            conditions: conds,
            ..Default::default()
        });
        p
    }

    fn event(uid: &str, type_: &str, reason: &str, seconds: i64) -> Event {
        Event {
            involved_object: ObjectReference {
                uid: Some(uid.into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            event_time: Some(MicroTime(at(seconds))),
            ..Default::default()
        }
    }

    fn sample() -> Report {
        let sockets = [socket(
            "db",
            "s1",
            vec![
                condition("Ready", "True", "SocketReady", ""),
                condition("Coupled", "True", "SocketCoupled", ""),
            ],
        )];
        let plugs = [
            plug(
                "app",
                "p1",
                "db",
                vec![
                    condition("Ready", "True", "CouplingSucceeded", ""),
                    condition("Coupled", "True", "CouplingSucceeded", ""),
                ],
            ),
            plug(
                "waiting",
                "p2",
                "ghost",
                vec![condition(
                    "Ready",
                    "False",
                    "SocketNotCreated",
                    "Socket ns/ghost does not exist\x1b[31m",
                )],
            ),
        ];
        let events = [
            event("p1", "Normal", "PlugCreated", 31),
            event("p1", "Normal", "PlugCoupled", 40),
            // Not hooks: a Warning, and a Normal Event that is not a hook's.
            event("p1", "Warning", "PlugCoupled", 50),
            event("p1", "Normal", "ResourceCreated", 55),
            event("s1", "Normal", "SocketCoupled", 41),
            event("p2", "Normal", "PlugCreated", 32),
        ];
        build(&sockets, &plugs, &events)
    }

    #[test]
    fn plugs_are_grouped_under_the_socket_they_name() {
        let report = sample();
        let names: Vec<(&str, bool, Vec<&str>)> = report
            .sockets
            .iter()
            .map(|g| {
                (
                    g.name.as_str(),
                    g.socket.is_some(),
                    g.plugs.iter().map(|p| p.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![("db", true, vec!["app"]), ("ghost", false, vec!["waiting"])]
        );
    }

    #[test]
    fn last_hook_is_the_latest_normal_hook_event() {
        let report = sample();
        let app = &report.sockets[0].plugs[0];
        assert_eq!(
            app.last_hook,
            Some(LastHook {
                hook: "PlugCoupled".into(),
                time: Some(at(40))
            })
        );
        assert_eq!(
            report.sockets[0]
                .socket
                .as_ref()
                .unwrap()
                .last_hook
                .as_ref()
                .unwrap()
                .hook,
            "SocketCoupled"
        );
    }

    #[test]
    fn reason_is_the_phase_when_ready_and_the_failure_when_not() {
        let report = sample();
        assert_eq!(
            report.sockets[0].socket.as_ref().unwrap().reason.as_deref(),
            Some("SocketCoupled")
        );
        let waiting = &report.sockets[1].plugs[0];
        assert_eq!(waiting.ready.as_deref(), Some("False"));
        assert_eq!(waiting.reason.as_deref(), Some("SocketNotCreated"));
    }

    #[test]
    fn table_reads_as_rows_per_socket_and_plug() {
        let table = render(&sample(), false, at(130));
        let expected = "\
SOCKET  PLUG       READY  REASON             LAST HOOK              AGE   MESSAGE
db      -          True   SocketCoupled      SocketCoupled 89s ago  2m
        └ app      True   CouplingSucceeded  PlugCoupled 90s ago    100s
ghost   -          -      -                  -                      -     no such Socket
        └ waiting  False  SocketNotCreated   PlugCreated 98s ago    100s  Socket ns/ghost does not exist\\u{1b}[31m
";
        assert_eq!(table, expected, "\n{table}");
    }

    #[test]
    fn all_namespaces_adds_the_namespace_column() {
        let table = render(&sample(), true, at(130));
        assert!(table.starts_with("NAMESPACE  SOCKET"), "{table}");
        assert!(
            table.lines().nth(1).unwrap().starts_with("ns         db"),
            "{table}"
        );
    }

    #[test]
    fn empty_report_says_so() {
        assert_eq!(
            render(&Report { sockets: vec![] }, false, at(0)),
            "No Plugs or Sockets found.\n"
        );
        assert!(!all_ready(&Report { sockets: vec![] }));
    }

    #[test]
    fn all_ready_needs_every_socket_and_plug_ready() {
        assert!(!all_ready(&sample()));
        let mut report = sample();
        report.sockets.truncate(1);
        assert!(all_ready(&report));
    }

    #[test]
    fn json_has_times_as_rfc3339_and_missing_sockets_as_null() {
        let value = serde_json::to_value(sample()).unwrap();
        assert_eq!(value["sockets"][1]["socket"], serde_json::Value::Null);
        assert_eq!(
            value["sockets"][0]["plugs"][0]["lastHook"],
            json!({"hook": "PlugCoupled", "time": at(40).to_string()})
        );
        assert_eq!(value["sockets"][0]["plugs"][0]["ready"], "True");
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(at(0), at(45)), "45s");
        assert_eq!(age(at(0), at(600)), "10m");
        assert_eq!(age(at(0), at(5 * 3600)), "5h");
        assert_eq!(age(at(0), at(3 * 86400)), "3d");
        assert_eq!(age(at(10), at(0)), "0s");
    }

    #[test]
    fn hook_reasons_are_side_and_point() {
        assert!(is_hook_reason("PlugCoupled"));
        assert!(is_hook_reason("SocketDeleted"));
        assert!(!is_hook_reason("ResourceCreated"));
        assert!(!is_hook_reason("PlugCoupledX"));
    }

    #[test]
    fn control_characters_are_escaped_and_long_messages_shortened() {
        assert_eq!(clean("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
