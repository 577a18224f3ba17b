//! Registry credentials, read from `kubernetes.io/dockerconfigjson` pull secrets.
//!
//! Credentials never reach logs or error messages: [`RegistryAuth`]'s `Debug` hides the
//! password, and parse errors name the registry entry and the field, never a value.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use super::error::OciError;

/// How to authenticate to a registry.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum RegistryAuth {
    /// No credentials (public images; Bearer-token registries hand out anonymous tokens).
    #[default]
    Anonymous,
    /// HTTP Basic credentials, also used to obtain Bearer tokens where the registry wants them.
    Basic {
        /// The user name.
        username: String,
        /// The password or access token.
        password: String,
    },
}

impl RegistryAuth {
    /// Whether credentials are present.
    pub fn has_credentials(&self) -> bool {
        !matches!(self, RegistryAuth::Anonymous)
    }

    pub(crate) fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            RegistryAuth::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            RegistryAuth::Basic { username, password } => {
                oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic { .. } => f.write_str("Basic { <redacted> }"),
        }
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    auths: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize, Default)]
struct DockerAuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// Picks the credentials for `registry` (`host` or `host:port`) from the `.dockerconfigjson`
/// key of a `kubernetes.io/dockerconfigjson` Secret.
///
/// An entry matches when its key names the same host and port, with or without a scheme and
/// path (`https://r.example/v1/` matches `r.example`); `docker.io`, `index.docker.io` and
/// `registry-1.docker.io` are one registry. The entry's `auth` (base64 of `user:password`)
/// wins over its `username`/`password` fields. No matching entry gives
/// [`RegistryAuth::Anonymous`]: a secret may well hold credentials for other registries only.
pub fn auth_from_docker_config(json: &[u8], registry: &str) -> Result<RegistryAuth, OciError> {
    let invalid = |problem: String| OciError::InvalidPullSecret { problem };
    // serde_json's messages may quote content ("invalid type: string …"): only the position.
    let config: DockerConfig = serde_json::from_slice(json).map_err(|e| {
        invalid(format!(
            ".dockerconfigjson is not valid JSON of the expected shape (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Some(auths) = config.auths else {
        return Err(invalid(
            ".dockerconfigjson has no \"auths\" object; create the secret with `kubectl \
             create secret docker-registry`"
                .into(),
        ));
    };
    let wanted = normalize_host(registry);
    let Some((key, value)) = auths.iter().find(|(key, _)| normalize_host(key) == wanted) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let entry: DockerAuthEntry = serde_json::from_value(value.clone()).map_err(|_| {
        invalid(format!(
            "the auths entry {key:?} is not an object of string fields (auth, username, password)"
        ))
    })?;
    if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| invalid(format!("the auth field of entry {key:?} is not base64")))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| invalid(format!("the auth field of entry {key:?} is not UTF-8")))?;
        let Some((username, password)) = text.split_once(':') else {
            return Err(invalid(format!(
                "the auth field of entry {key:?} is not base64 of user:password"
            )));
        };
        return Ok(RegistryAuth::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    match (entry.username, entry.password) {
        (Some(username), Some(password)) if !username.is_empty() => {
            Ok(RegistryAuth::Basic { username, password })
        }
        _ if entry.identitytoken.is_some() => Err(invalid(format!(
            "the entry {key:?} has only an identity token, which is not supported; use a \
             username and password or access token"
        ))),
        _ => Err(invalid(format!(
            "the entry {key:?} has neither auth nor username and password"
        ))),
    }
}

/// `https://Host:5000/v1/` → `host:5000`; Docker Hub's aliases → `docker.io`.
fn normalize_host(key: &str) -> String {
    let key = key.trim();
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme
        .split('/')
        .next()
        .unwrap_or(without_scheme)
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(username: &str, password: &str) -> RegistryAuth {
        RegistryAuth::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    fn problem(json: &str, registry: &str) -> String {
        match auth_from_docker_config(json.as_bytes(), registry) {
            Err(OciError::InvalidPullSecret { problem }) => problem,
            other => panic!("expected an invalid pull secret, got {other:?}"),
        }
    }

    #[test]
    fn auth_field_is_base64_user_and_password() {
        // base64("robot:s3cr:et") — the password may contain colons.
        let json = r#"{"auths":{"r.example":{"auth":"cm9ib3Q6czNjcjpldA=="}}}"#;
        assert_eq!(
            auth_from_docker_config(json.as_bytes(), "r.example").unwrap(),
            basic("robot", "s3cr:et")
        );
    }

    #[test]
    fn username_and_password_fields_work() {
        let json = r#"{"auths":{"r.example:5000":{"username":"u","password":"p"}}}"#;
        assert_eq!(
            auth_from_docker_config(json.as_bytes(), "r.example:5000").unwrap(),
            basic("u", "p")
        );
    }

    #[test]
    fn keys_match_with_scheme_and_path() {
        let json = r#"{"auths":{"https://R.example/v1/":{"username":"u","password":"p"}}}"#;
        assert_eq!(
            auth_from_docker_config(json.as_bytes(), "r.example").unwrap(),
            basic("u", "p")
        );
        let json = r#"{"auths":{"http://127.0.0.1:5000":{"username":"u","password":"p"}}}"#;
        assert_eq!(
            auth_from_docker_config(json.as_bytes(), "127.0.0.1:5000").unwrap(),
            basic("u", "p")
        );
    }

    #[test]
    fn docker_hub_aliases_match() {
        let json = r#"{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p"}}}"#;
        assert_eq!(
            auth_from_docker_config(json.as_bytes(), "docker.io").unwrap(),
            basic("u", "p")
        );
    }

    #[test]
    fn other_registries_and_ports_do_not_match() {
        let json = r#"{"auths":{"r.example:5000":{"username":"u","password":"p"}}}"#;
        assert_eq!(
            auth_from_docker_config(json.as_bytes(), "r.example").unwrap(),
            RegistryAuth::Anonymous
        );
        assert_eq!(
            auth_from_docker_config(json.as_bytes(), "other.example:5000").unwrap(),
            RegistryAuth::Anonymous
        );
    }

    #[test]
    fn malformed_secrets_are_explained_without_their_values() {
        assert!(problem("not json", "r.example").contains("not valid JSON"));
        let wrong_shape = problem(r#"{"auths":"hunter2"}"#, "r.example");
        assert!(wrong_shape.contains("expected shape"));
        assert!(!wrong_shape.contains("hunter2"));
        assert!(problem(r#"{"r.example":{}}"#, "r.example").contains("no \"auths\""));
        let bad = problem(
            r#"{"auths":{"r.example":{"auth":"%%%hunter2"}}}"#,
            "r.example",
        );
        assert!(bad.contains("not base64"));
        assert!(!bad.contains("hunter2"));
        // base64("hunter2"): no colon.
        let no_colon = problem(
            r#"{"auths":{"r.example":{"auth":"aHVudGVyMg=="}}}"#,
            "r.example",
        );
        assert!(no_colon.contains("user:password"));
        assert!(!no_colon.contains("aHVudGVyMg"));
        assert!(problem(r#"{"auths":{"r.example":{}}}"#, "r.example").contains("neither"));
        assert!(
            problem(
                r#"{"auths":{"r.example":{"identitytoken":"t"}}}"#,
                "r.example"
            )
            .contains("identity token")
        );
    }

    #[test]
    fn debug_never_shows_credentials() {
        let shown = format!("{:?}", basic("robot", "hunter2"));
        assert!(!shown.contains("robot"));
        assert!(!shown.contains("hunter2"));
    }
}
