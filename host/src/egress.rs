//! The operator's egress policy: which addresses tenant-chosen endpoints may reach.
//!
//! Plug and Socket authors choose where plugboard connects: HTTP apparatus endpoints and the
//! `allowedHosts` of WebAssembly components. Without a bound, that is a server-side request
//! forgery channel into the operator's network position (loopback, the cloud metadata service
//! at `169.254.169.254`, the Kubernetes API server). The [`EgressPolicy`] is that bound. It is
//! checked **against the resolved IP address at connect time**: the [`EgressResolver`] resolves
//! a name, drops every address the policy refuses and fails when none is left, so a name that
//! resolves to an allowed address when checked and to a denied one when used (DNS rebinding)
//! still cannot connect anywhere denied. URLs whose host is an IP literal never reach a
//! resolver, so callers check them with [`EgressPolicy::check_url`] before sending.
//!
//! How an address is judged (first match wins):
//!
//! 1. an operator **deny** entry (a CIDR containing the address, or a host entry matching the
//!    name) refuses it — deny wins over allow;
//! 2. an operator **allow** CIDR containing the address permits it;
//! 3. the **built-in** denials refuse it: loopback (`127.0.0.0/8`, `::1`), link-local
//!    (`169.254.0.0/16` with the cloud metadata address, `fe80::/10`), unspecified and "this
//!    network" (`0.0.0.0/8`, `::`), deprecated IPv4-compatible IPv6 (`::/96`), broadcast,
//!    multicast, the metadata addresses `fd00:ec2::254` and `100.100.100.200`, and the
//!    operator's own API server (the addresses of the kubeconfig's cluster URL and the names
//!    `kubernetes.default.svc…`);
//! 4. with [`EgressOptions::deny_unlisted`], an address is permitted only when an allow host
//!    entry matches the name it was resolved from; otherwise it is permitted.
//!
//! Private ranges (`10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7`) are allowed by
//! default, because in-cluster apparatus Services live there; deny them with
//! `--egress-deny 10.0.0.0/8,…` and allow back the Service range you use. Host entries refuse
//! names (or, in allow-list mode, permit names) but never lift a built-in denial: a permitted
//! name that resolves to a loopback address is still refused. Only an allow CIDR lifts one.
//! IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are judged as the IPv4 address they carry.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// Why an entry of the policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid egress entry {entry:?}: {reason}; use a CIDR like 10.0.0.0/8, an address, a host \
     name like api.example.com or a wildcard like *.example.com"
)]
pub struct EntryError {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A range of IP addresses: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The range of `addr` with `prefix` leading bits fixed; `None` when the prefix is longer
    /// than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        if let IpAddr::V6(v6) = addr
            && prefix >= 96
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Some(Cidr {
                addr: IpAddr::V4(v4),
                prefix: prefix - 96,
            });
        }
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Cidr, EntryError> {
        let error = |reason: &str| EntryError {
            entry: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (
                addr,
                Some(
                    prefix
                        .parse::<u8>()
                        .map_err(|_| error("the prefix length is not a number"))?,
                ),
            ),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| error("it is not an IP address"))?;
        let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        Cidr::new(addr, prefix).ok_or_else(|| error("the prefix is longer than the address"))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries; others unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// One entry of an allow or deny list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressRule {
    /// Addresses in a range.
    Net(Cidr),
    /// Exactly this host name (lowercase, without a trailing dot).
    Host(String),
    /// Names ending in `.<suffix>` (written `*.<suffix>`).
    Suffix(String),
}

impl EgressRule {
    /// Whether the rule matches the name `host` (already normalised) or the address `ip`.
    fn matches(&self, host: Option<&str>, ip: Option<IpAddr>) -> bool {
        match self {
            EgressRule::Net(net) => ip.is_some_and(|ip| net.contains(ip)),
            EgressRule::Host(name) => host == Some(name.as_str()),
            EgressRule::Suffix(suffix) => host.is_some_and(|h| {
                h.strip_suffix(suffix.as_str())
                    .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
            }),
        }
    }

    fn is_host(&self) -> bool {
        !matches!(self, EgressRule::Net(_))
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressRule::Net(net) => net.fmt(f),
            EgressRule::Host(name) => f.write_str(name),
            EgressRule::Suffix(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

impl FromStr for EgressRule {
    type Err = EntryError;

    /// `10.0.0.0/8`, `fd00::/8`, `192.0.2.7`, `api.example.com` or `*.example.com`.
    fn from_str(s: &str) -> Result<EgressRule, EntryError> {
        let s = s.trim();
        let error = |reason: &str| EntryError {
            entry: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(error("it is empty"));
        }
        if s.contains('/') || s.parse::<IpAddr>().is_ok() || s.starts_with('[') {
            return s.parse().map(EgressRule::Net);
        }
        let (wildcard, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = normalise_host(name);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(error("it is not a host name"));
        }
        Ok(if wildcard {
            EgressRule::Suffix(name)
        } else {
            EgressRule::Host(name)
        })
    }
}

/// Lowercase, without brackets or a trailing dot.
fn normalise_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// What the operator configures (flags `--egress-allow`, `--egress-deny`,
/// `--egress-deny-unlisted` of `plugboard run`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressOptions {
    /// Entries refused always; they win over every allow.
    pub deny: Vec<EgressRule>,
    /// Entries permitted: a CIDR here lifts a built-in denial (e.g. `127.0.0.0/8` for a
    /// loopback apparatus in development); a host entry matters only with `deny_unlisted`.
    pub allow: Vec<EgressRule>,
    /// Refuse every address that no allow entry lists (allow-list mode).
    pub deny_unlisted: bool,
    /// **Test-only knob**: fixed answers for host names (lowercase), used by the resolver
    /// instead of DNS. Lets tests resolve an allowed name to a denied address (DNS rebinding)
    /// without a DNS server. Leave empty in production.
    pub static_hosts: HashMap<String, Vec<IpAddr>>,
}

impl EgressOptions {
    /// Options that additionally permit loopback (`127.0.0.0/8`, `::1`): for a local
    /// development cluster and for tests whose apparatuses listen on loopback.
    pub fn allowing_loopback(mut self) -> Self {
        for net in ["127.0.0.0/8", "::1/128"] {
            if let Ok(rule) = net.parse() {
                self.allow.push(rule);
            }
        }
        self
    }
}

/// The flag that changes the policy, named in refusals.
pub const FLAG_HINT: &str = "--egress-allow / --egress-deny of plugboard run";

/// Why the policy refused an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// An operator deny entry matched.
    Denied(String),
    /// A built-in denial matched (its category, e.g. `loopback`).
    BuiltIn(&'static str),
    /// The operator's own API server.
    ApiServer,
    /// Allow-list mode and no allow entry lists it.
    Unlisted,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Denied(rule) => write!(f, "it matches the deny entry {rule}"),
            Refused::BuiltIn(category) => write!(f, "it is a {category} address"),
            Refused::ApiServer => f.write_str("it is the Kubernetes API server"),
            Refused::Unlisted => f.write_str("no allow entry lists it"),
        }
    }
}

/// A connection the egress policy refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the operator's egress policy refuses {target}: {why}; an operator can change it with \
     {FLAG_HINT}"
)]
pub struct EgressDenied {
    /// The host, and the address it resolved to when that is what was refused.
    pub target: String,
    /// Why.
    pub why: Refused,
}

/// The built-in denials, by category.
const BUILT_IN: &[(&str, &str)] = &[
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("fe80::/10", "link-local"),
    ("0.0.0.0/8", "unspecified"),
    ("::/128", "unspecified"),
    ("::/96", "IPv4-compatible IPv6"),
    ("255.255.255.255/32", "broadcast"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("100.100.100.200/32", "cloud metadata"),
];

/// Names of the API server inside a cluster.
const API_SERVER_NAMES: &[&str] = &[
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The policy in force: operator options plus built-in denials and the API server.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: EgressOptions,
    built_in: Vec<(Cidr, &'static str)>,
    api_addrs: Vec<IpAddr>,
    api_names: Vec<String>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy::new(EgressOptions::default())
    }
}

impl EgressPolicy {
    /// The policy of `options` with the built-in denials (and the in-cluster API server
    /// names); add the API server's own addresses with [`EgressPolicy::with_api_server`].
    pub fn new(options: EgressOptions) -> EgressPolicy {
        let built_in = BUILT_IN
            .iter()
            .filter_map(|(net, category)| Some((net.parse().ok()?, *category)))
            .collect();
        EgressPolicy {
            inner: Arc::new(Inner {
                options,
                built_in,
                api_addrs: Vec::new(),
                api_names: API_SERVER_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            }),
        }
    }

    /// The same policy, also refusing the API server at `cluster_url` (the kubeconfig's): its
    /// host name and every address it resolves to now. A name that does not resolve is only
    /// refused by name (with a warning).
    pub async fn with_api_server(self, cluster_url: &str) -> EgressPolicy {
        let Ok(url) = reqwest::Url::parse(cluster_url) else {
            tracing::warn!(
                cluster_url,
                "cannot parse the API server URL; it is not in the egress policy"
            );
            return self;
        };
        let mut addrs = Vec::new();
        let mut names = Vec::new();
        match url_host(&url) {
            Some(UrlHost::Ip(ip)) => addrs.push(ip),
            Some(UrlHost::Name(name)) => {
                let port = url.port_or_known_default().unwrap_or(443);
                match tokio::net::lookup_host((name.as_str(), port)).await {
                    Ok(found) => addrs.extend(found.map(|a| a.ip())),
                    Err(error) => tracing::warn!(
                        %error,
                        host = name,
                        "cannot resolve the API server; the egress policy refuses it by name only"
                    ),
                }
                names.push(name);
            }
            None => {}
        }
        let inner = &self.inner;
        let mut api_addrs = inner.api_addrs.clone();
        api_addrs.extend(addrs.into_iter().map(canonical));
        let mut api_names = inner.api_names.clone();
        api_names.extend(names);
        tracing::info!(
            ?api_addrs,
            ?api_names,
            "egress policy refuses the API server"
        );
        EgressPolicy {
            inner: Arc::new(Inner {
                options: inner.options.clone(),
                built_in: inner.built_in.clone(),
                api_addrs,
                api_names,
            }),
        }
    }

    /// The operator's options.
    pub fn options(&self) -> &EgressOptions {
        &self.inner.options
    }

    /// Judges the address `ip`, reached through the name `host` when there is one.
    pub fn check(&self, host: Option<&str>, ip: IpAddr) -> Result<(), EgressDenied> {
        let host = host.map(normalise_host);
        let host = host.as_deref().filter(|h| h.parse::<IpAddr>().is_err());
        let ip = canonical(ip);
        let refuse = |why: Refused| EgressDenied {
            target: match host {
                Some(host) => format!("{host} ({ip})"),
                None => ip.to_string(),
            },
            why,
        };
        let inner = &self.inner;
        if let Some(rule) = inner
            .options
            .deny
            .iter()
            .find(|r| r.matches(host, Some(ip)))
        {
            return Err(refuse(Refused::Denied(rule.to_string())));
        }
        if inner
            .options
            .allow
            .iter()
            .any(|r| !r.is_host() && r.matches(None, Some(ip)))
        {
            return Ok(());
        }
        if let Some((_, category)) = inner.built_in.iter().find(|(net, _)| net.contains(ip)) {
            return Err(refuse(Refused::BuiltIn(category)));
        }
        if inner.api_addrs.contains(&ip)
            || host.is_some_and(|h| inner.api_names.iter().any(|n| n == h))
        {
            return Err(refuse(Refused::ApiServer));
        }
        if inner.options.deny_unlisted
            && !inner
                .options
                .allow
                .iter()
                .any(|r| r.is_host() && r.matches(host, None))
        {
            return Err(refuse(Refused::Unlisted));
        }
        Ok(())
    }

    /// Judges a host name before it is resolved: refused when a deny host entry matches it.
    /// Its addresses (and the API server's names) are judged later, when it resolves.
    pub fn check_name(&self, host: &str) -> Result<(), EgressDenied> {
        let name = normalise_host(host);
        let refuse = |why: Refused| EgressDenied {
            target: name.clone(),
            why,
        };
        let inner = &self.inner;
        if let Some(rule) = inner
            .options
            .deny
            .iter()
            .find(|r| r.is_host() && r.matches(Some(&name), None))
        {
            return Err(refuse(Refused::Denied(rule.to_string())));
        }
        Ok(())
    }

    /// Judges a URL before sending: an IP-literal host (which no resolver sees) is judged
    /// here as an address; a name only by [`EgressPolicy::check_name`] (its addresses are
    /// judged by the [`EgressResolver`] at connect time). A URL without a host is refused.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), EgressDenied> {
        match url_host(url) {
            Some(UrlHost::Ip(ip)) => self.check(None, ip),
            Some(UrlHost::Name(name)) => self.check_name(&name),
            None => Err(EgressDenied {
                target: "a URL without a host".to_owned(),
                why: Refused::Unlisted,
            }),
        }
    }

    /// The resolver that enforces this policy, for `reqwest::ClientBuilder::dns_resolver`.
    pub fn resolver(&self) -> EgressResolver {
        EgressResolver {
            policy: self.clone(),
        }
    }
}

/// A `reqwest` DNS resolver that resolves a name and keeps only the addresses the policy
/// permits, failing with [`EgressDenied`] when none is left.
#[derive(Debug, Clone)]
pub struct EgressResolver {
    policy: EgressPolicy,
}

impl reqwest::dns::Resolve for EgressResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = normalise_host(name.as_str());
        Box::pin(async move {
            policy
                .check_name(&host)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let found: Vec<IpAddr> = match policy.inner.options.static_hosts.get(&host) {
                Some(fixed) => fixed.clone(),
                None => tokio::net::lookup_host((host.as_str(), 0))
                    .await?
                    .map(|a| a.ip())
                    .collect(),
            };
            let mut permitted = Vec::new();
            let mut refusal = None;
            for ip in found {
                match policy.check(Some(&host), ip) {
                    Ok(()) => permitted.push(SocketAddr::new(ip, 0)),
                    Err(denied) => {
                        tracing::debug!(%denied, "egress policy dropped an address");
                        refusal.get_or_insert(denied);
                    }
                }
            }
            if permitted.is_empty() {
                return Err(match refusal {
                    Some(denied) => Box::new(denied) as Box<dyn std::error::Error + Send + Sync>,
                    None => format!("{host} resolved to no address").into(),
                });
            }
            let addrs: reqwest::dns::Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

/// The egress refusal somewhere in `error`'s chain of causes, if any.
pub fn find_denied<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressDenied> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(denied) = e.downcast_ref::<EgressDenied>() {
            return Some(denied);
        }
        current = e.source();
    }
    None
}

/// A URL's host: an address literal or a (normalised) name.
enum UrlHost {
    Ip(IpAddr),
    Name(String),
}

fn url_host(url: &reqwest::Url) -> Option<UrlHost> {
    let host = normalise_host(url.host_str().filter(|h| !h.is_empty())?);
    Some(match host.parse::<IpAddr>() {
        Ok(ip) => UrlHost::Ip(ip),
        Err(_) => UrlHost::Name(host),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected values")]
mod tests {
    use super::*;

    fn rules(entries: &[&str]) -> Vec<EgressRule> {
        entries.iter().map(|e| e.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(allow: &[&str], deny: &[&str]) -> EgressPolicy {
        EgressPolicy::new(EgressOptions {
            allow: rules(allow),
            deny: rules(deny),
            ..Default::default()
        })
    }

    #[test]
    fn cidrs_match_their_ranges_only() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.255.1.2")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        let net: Cidr = "172.16.0.0/12".parse().unwrap();
        assert!(net.contains(ip("172.31.255.255")));
        assert!(!net.contains(ip("172.32.0.0")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
        let v6: Cidr = "fe80::/10".parse().unwrap();
        assert!(v6.contains(ip("fe80::1")));
        assert!(v6.contains(ip("febf::1")));
        assert!(!v6.contains(ip("fec0::1")));
        // An IPv4-mapped IPv6 address is judged as the IPv4 address it carries.
        let lo: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains(ip("::ffff:127.0.0.1")));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains(ip("10.1.2.3")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "nonsense/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_parse_as_cidrs_hosts_or_wildcards() {
        assert_eq!(
            "API.Example.com.".parse::<EgressRule>().unwrap(),
            EgressRule::Host("api.example.com".into())
        );
        assert_eq!(
            "*.example.com".parse::<EgressRule>().unwrap(),
            EgressRule::Suffix("example.com".into())
        );
        assert!(matches!(
            "10.0.0.0/8".parse::<EgressRule>().unwrap(),
            EgressRule::Net(_)
        ));
        assert!(matches!(
            "::1".parse::<EgressRule>().unwrap(),
            EgressRule::Net(_)
        ));
        for bad in ["", "a b", "*.", "exa mple.com", "http://x", "10.0.0.0/40"] {
            let e = bad.parse::<EgressRule>().unwrap_err();
            assert!(e.to_string().starts_with("invalid egress entry"), "{e}");
        }
        let wildcard = EgressRule::Suffix("example.com".into());
        assert!(wildcard.matches(Some("a.example.com"), None));
        assert!(wildcard.matches(Some("a.b.example.com"), None));
        assert!(!wildcard.matches(Some("example.com"), None));
        assert!(!wildcard.matches(Some("badexample.com"), None));
    }

    #[test]
    fn default_policy_refuses_loopback_link_local_metadata_and_special_addresses() {
        let p = EgressPolicy::default();
        for (addr, category) in [
            ("127.0.0.1", "loopback"),
            ("127.1.2.3", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("fd00:ec2::254", "cloud metadata"),
        ] {
            let refused = p.check(None, ip(addr)).unwrap_err();
            assert_eq!(refused.why, Refused::BuiltIn(category), "{addr}");
            assert!(refused.to_string().contains("--egress-allow"), "{refused}");
        }
        // Private ranges (in-cluster Services) and public addresses are allowed by default.
        for addr in [
            "10.96.0.10",
            "172.16.0.1",
            "192.168.1.1",
            "fd12::1",
            "203.0.113.9",
            "2001:db8::1",
        ] {
            assert!(p.check(Some("svc.example"), ip(addr)).is_ok(), "{addr}");
        }
        // The in-cluster names of the API server are refused whatever they resolve to.
        assert_eq!(
            p.check(Some("kubernetes.default.svc"), ip("10.96.0.1"))
                .unwrap_err()
                .why,
            Refused::ApiServer
        );
    }

    #[test]
    fn deny_wins_over_allow_and_allow_lifts_built_in_denials() {
        let p = policy(
            &["127.0.0.0/8", "10.0.0.0/8"],
            &["10.1.0.0/16", "evil.example"],
        );
        assert!(p.check(None, ip("127.0.0.1")).is_ok());
        assert!(p.check(None, ip("10.2.0.1")).is_ok());
        let refused = p.check(None, ip("10.1.2.3")).unwrap_err();
        assert_eq!(refused.why, Refused::Denied("10.1.0.0/16".into()));
        // ::1 stays refused: only the IPv4 loopback range was allowed.
        assert!(p.check(None, ip("::1")).is_err());
        let refused = p
            .check(Some("EVIL.example."), ip("203.0.113.9"))
            .unwrap_err();
        assert_eq!(refused.why, Refused::Denied("evil.example".into()));
        assert!(p.check_name("evil.example").is_err());
        // Deny a private range a default policy allows.
        let p = policy(&[], &["10.0.0.0/8", "fc00::/7"]);
        assert!(p.check(None, ip("10.0.0.1")).is_err());
        assert!(p.check(None, ip("fd00::1")).is_err());
        assert!(p.check(None, ip("192.168.0.1")).is_ok());
    }

    #[test]
    fn host_entries_never_lift_an_address_denial() {
        // An allowed name that resolves to loopback (DNS rebinding) is refused.
        let p = EgressPolicy::new(EgressOptions {
            allow: rules(&["rebind.example"]),
            deny_unlisted: true,
            ..Default::default()
        });
        let refused = p
            .check(Some("rebind.example"), ip("127.0.0.1"))
            .unwrap_err();
        assert_eq!(refused.why, Refused::BuiltIn("loopback"));
        assert!(refused.to_string().contains("rebind.example (127.0.0.1)"));
        assert!(p.check(Some("rebind.example"), ip("203.0.113.9")).is_ok());
        // Allow-list mode refuses names and addresses no entry lists.
        assert_eq!(
            p.check(Some("other.example"), ip("203.0.113.9"))
                .unwrap_err()
                .why,
            Refused::Unlisted
        );
        assert!(p.check(None, ip("203.0.113.9")).is_err());
    }

    #[tokio::test]
    async fn api_server_addresses_are_refused_unless_allowed_by_cidr() {
        let p = EgressPolicy::default()
            .with_api_server("https://192.0.2.10:6443")
            .await;
        assert_eq!(
            p.check(None, ip("192.0.2.10")).unwrap_err().why,
            Refused::ApiServer
        );
        assert!(p.check(None, ip("192.0.2.11")).is_ok());
        let p = EgressPolicy::new(EgressOptions {
            allow: rules(&["192.0.2.10"]),
            ..Default::default()
        })
        .with_api_server("https://192.0.2.10:6443")
        .await;
        assert!(p.check(None, ip("192.0.2.10")).is_ok());
        let p = EgressPolicy::default()
            .with_api_server("https://localhost:6443")
            .await;
        assert_eq!(
            p.check(Some("localhost"), ip("192.0.2.50"))
                .unwrap_err()
                .why,
            Refused::ApiServer
        );
    }

    #[test]
    fn urls_with_ip_literals_are_judged_before_sending() {
        let p = EgressPolicy::default();
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(p.check_url(&url("http://127.0.0.1:8080/x")).is_err());
        assert!(p.check_url(&url("http://[::1]:8080/x")).is_err());
        assert!(p.check_url(&url("http://169.254.169.254/latest")).is_err());
        assert!(
            p.check_url(&url("http://[::ffff:169.254.169.254]/"))
                .is_err()
        );
        assert!(p.check_url(&url("https://203.0.113.9/")).is_ok());
        // Other spellings of loopback are parsed to the same address by the URL parser.
        for spelled in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::127.0.0.1]/",
            "http://[0:0:0:0:0:ffff:7f00:1]/",
        ] {
            assert!(p.check_url(&url(spelled)).is_err(), "{spelled}");
        }
        // Names are judged by the resolver, except names denied by name.
        assert!(p.check_url(&url("http://localhost:8080/")).is_ok());
        let p = policy(&[], &["*.internal.example"]);
        assert!(p.check_url(&url("https://db.internal.example/")).is_err());
        let p = EgressPolicy::new(EgressOptions::default().allowing_loopback());
        assert!(p.check_url(&url("http://127.0.0.1:8080/x")).is_ok());
        assert!(p.check_url(&url("http://[::1]:8080/x")).is_ok());
    }

    #[tokio::test]
    async fn resolver_filters_addresses_and_refuses_when_none_is_left() {
        use reqwest::dns::Resolve as _;
        let mut static_hosts = HashMap::new();
        static_hosts.insert("rebind.test".to_owned(), vec![ip("127.0.0.1")]);
        static_hosts.insert(
            "mixed.test".to_owned(),
            vec![ip("169.254.169.254"), ip("203.0.113.9")],
        );
        let p = EgressPolicy::new(EgressOptions {
            static_hosts,
            ..Default::default()
        });
        let resolver = p.resolver();
        let error = resolver
            .resolve("rebind.test".parse().unwrap())
            .await
            .err()
            .unwrap();
        let denied = find_denied(&*error).unwrap();
        assert_eq!(denied.why, Refused::BuiltIn("loopback"));
        let addrs: Vec<SocketAddr> = resolver
            .resolve("mixed.test".parse().unwrap())
            .await
            .ok()
            .unwrap()
            .collect();
        assert_eq!(addrs, vec![SocketAddr::new(ip("203.0.113.9"), 0)]);
        // `localhost` resolves through the system to loopback: refused.
        let error = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(find_denied(&*error).is_some(), "{error}");
    }
}
