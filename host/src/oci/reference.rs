//! Image references of WebAssembly apparatuses: `registry/repository:tag`,
//! `registry/repository@sha256:…`, or both.
//!
//! Stricter than Docker on purpose, so that what a spec names is what is pulled:
//!
//! - the registry is explicit (`ghcr.io/org/hooks:1`, `localhost:5000/hooks:1`); a bare
//!   `org/hooks:1` is not silently read as Docker Hub;
//! - a tag or a digest is explicit; there is no implicit `latest`;
//! - digests are `sha256:` with 64 lowercase hex digits (what the CRD schema admits).
//!
//! When both a tag and a digest are given, the digest decides and the tag is not consulted, as
//! in Docker and Kubernetes.

use std::fmt;
use std::str::FromStr;

use super::error::OciError;

/// A parsed, validated image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    inner: oci_client::Reference,
}

impl ImageRef {
    /// Parses and validates `reference`.
    pub fn parse(reference: &str) -> Result<Self, OciError> {
        let invalid = |problem: &str| OciError::InvalidReference {
            reference: reference.to_owned(),
            problem: problem.to_owned(),
        };
        if reference.is_empty() {
            return Err(invalid("it is empty"));
        }
        if reference.chars().any(char::is_whitespace) {
            return Err(invalid("it contains whitespace"));
        }
        if reference.contains("://") {
            return Err(invalid(
                "remove the scheme: a reference is registry/repository:tag, without https://",
            ));
        }
        let (name_and_tag, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (reference, None),
        };
        if let Some(digest) = digest {
            let Some(hex) = digest.strip_prefix("sha256:") else {
                return Err(invalid("only sha256 digests are supported (@sha256:…)"));
            };
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(invalid(
                    "a sha256 digest is 64 lowercase hexadecimal digits after sha256:",
                ));
            }
        }
        let last_slash = name_and_tag.rfind('/');
        let tag_colon = name_and_tag
            .rfind(':')
            .filter(|colon| last_slash.is_none_or(|slash| *colon > slash));
        let name = match tag_colon {
            Some(colon) => &name_and_tag[..colon],
            None => name_and_tag,
        };
        if tag_colon.is_none() && digest.is_none() {
            return Err(invalid(
                "add a tag (:1.0.0) or, better, a digest (@sha256:…); there is no implicit latest",
            ));
        }
        let registry = name.split_once('/').map(|(first, _)| first);
        let explicit_registry =
            registry.is_some_and(|r| r.contains('.') || r.contains(':') || r == "localhost");
        if !explicit_registry {
            return Err(invalid(
                "name the registry explicitly, e.g. ghcr.io/org/hooks:1.0.0 or \
                 docker.io/org/hooks:1.0.0",
            ));
        }
        let repository = &name[name.find('/').map_or(0, |slash| slash + 1)..];
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("the repository name must be lowercase"));
        }
        if let Some(colon) = tag_colon {
            let tag = &name_and_tag[colon + 1..];
            let valid_tag = tag.len() <= 128
                && tag
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !valid_tag {
                return Err(invalid(
                    "a tag is 1 to 128 letters, digits, _, . and -, not starting with . or -",
                ));
            }
        }
        let inner = oci_client::Reference::try_from(reference).map_err(|e| match e {
            oci_client::ParseError::ReferenceInvalidFormat => invalid(
                "it is not registry/repository:tag; repository path components are lowercase \
                 letters and digits separated by ., _, __ or -",
            ),
            other => invalid(&other.to_string()),
        })?;
        Ok(ImageRef { inner })
    }

    /// The registry host (with port, if any), as written.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository within the registry.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if given.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The pinned manifest digest (`sha256:…`), if given.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// The host to connect to (Docker Hub's API host for `docker.io`).
    pub(crate) fn api_registry(&self) -> &str {
        self.inner.resolve_registry()
    }

    /// The reference in `oci-client`'s terms.
    pub(crate) fn oci(&self) -> &oci_client::Reference {
        &self.inner
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl FromStr for ImageRef {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn problem(reference: &str) -> String {
        match ImageRef::parse(reference) {
            Err(OciError::InvalidReference { problem, .. }) => problem,
            other => panic!("expected an invalid reference for {reference:?}, got {other:?}"),
        }
    }

    #[test]
    fn tag_reference_parses() {
        let r = ImageRef::parse("ghcr.io/org/hooks:1.2.0").unwrap();
        assert_eq!(r.registry(), "ghcr.io");
        assert_eq!(r.repository(), "org/hooks");
        assert_eq!(r.tag(), Some("1.2.0"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.to_string(), "ghcr.io/org/hooks:1.2.0");
    }

    #[test]
    fn digest_reference_parses() {
        let r = ImageRef::parse(&format!("127.0.0.1:5000/hooks@{DIGEST}")).unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "hooks");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(DIGEST));
    }

    #[test]
    fn tag_and_digest_reference_keeps_both() {
        let r = ImageRef::parse(&format!("localhost:5000/a/b:v1@{DIGEST}")).unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest(), Some(DIGEST));
        assert_eq!(r.to_string(), format!("localhost:5000/a/b:v1@{DIGEST}"));
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        assert!(problem("localhost:5000/hooks").contains("add a tag"));
    }

    #[test]
    fn implicit_registry_is_refused() {
        assert!(problem("org/hooks:1").contains("name the registry explicitly"));
        assert!(problem("hooks:1").contains("name the registry explicitly"));
    }

    #[test]
    fn docker_hub_is_fine_when_named() {
        let r = ImageRef::parse("docker.io/org/hooks:1").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_registry(), "index.docker.io");
    }

    #[test]
    fn missing_tag_and_digest_is_refused() {
        assert!(problem("ghcr.io/org/hooks").contains("no implicit latest"));
    }

    #[test]
    fn bad_digests_are_refused() {
        assert!(problem("ghcr.io/org/hooks@sha512:abcd").contains("only sha256"));
        assert!(problem("ghcr.io/org/hooks@sha256:abcd").contains("64 lowercase"));
        let upper = DIGEST.to_uppercase().replace("SHA256", "sha256");
        assert!(problem(&format!("ghcr.io/org/hooks@{upper}")).contains("64 lowercase"));
    }

    #[test]
    fn grammar_errors_name_the_problem() {
        assert!(problem("ghcr.io/Org/hooks:1").contains("must be lowercase"));
        assert!(problem("ghcr.io/org/hooks:bad+tag").contains("a tag is"));
        assert!(problem("ghcr.io/org/hooks:.x").contains("a tag is"));
        assert!(problem("ghcr.io/org//hooks:1").contains("path components"));
        assert!(problem("ghcr.io/org/-hooks:1").contains("path components"));
        assert!(problem("https://ghcr.io/org/hooks:1").contains("remove the scheme"));
        assert!(problem("ghcr.io/org/hooks :1").contains("whitespace"));
        assert!(problem("").contains("empty"));
    }
}
