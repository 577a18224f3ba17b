//! `WWW-Authenticate` challenges (RFC 7235), as registries send them with a 401: `Bearer
//! realm="https://auth.example/token",service="registry.example"` or `Basic realm="registry"`.
//!
//! Parsing never fails: what cannot be read is skipped, and a header without a usable
//! challenge leaves the pull unauthorized.

/// One challenge: its scheme (lowercase) and parameters (names lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) scheme: String,
    pub(crate) params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name` (lowercase), if given.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The challenges in one header value. Several challenges, and several parameters, are
/// separated by commas; quoted values may contain commas.
pub(crate) fn parse(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            break;
        }
        let (name, after) = split_token(rest);
        if name.is_empty() {
            // Not a token character: skip it.
            let mut chars = rest.chars();
            chars.next();
            rest = chars.as_str();
            continue;
        }
        let after_space = after.trim_start_matches([' ', '\t']);
        if let Some(value) = after_space.strip_prefix('=') {
            let value = value.trim_start_matches([' ', '\t']);
            let (value, remaining) = match value.strip_prefix('"') {
                Some(quoted) => parse_quoted(quoted),
                // Unquoted: a token, read leniently up to the next comma or space (registries
                // write unquoted URLs too).
                None => {
                    let end = value.find([',', ' ', '\t']).unwrap_or(value.len());
                    let (token, remaining) = value.split_at(end);
                    (token.to_owned(), remaining)
                }
            };
            // A parameter before any scheme belongs to nothing.
            if let Some(current) = out.last_mut() {
                current.params.push((name.to_ascii_lowercase(), value));
            }
            rest = remaining;
        } else {
            out.push(Challenge {
                scheme: name.to_ascii_lowercase(),
                params: Vec::new(),
            });
            rest = after;
        }
    }
    out
}

/// RFC 7230 token characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// The leading token of `s` and what follows it.
fn split_token(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !is_token_char(c)).unwrap_or(s.len());
    s.split_at(end)
}

/// The content of a quoted string whose opening quote is already consumed, with escapes
/// resolved, and what follows its closing quote (an unterminated string takes the rest).
fn parse_quoted(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, &s[i + c.len_utf8()..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            other => value.push(other),
        }
    }
    (value, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_a_comma_in_a_quoted_scope() {
        let found = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(found.len(), 1);
        let bearer = &found[0];
        assert_eq!(bearer.scheme, "bearer");
        assert_eq!(bearer.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(bearer.param("service"), Some("registry.docker.io"));
        assert_eq!(
            bearer.param("scope"),
            Some("repository:samalba/my-app:pull,push")
        );
    }

    #[test]
    fn several_challenges_tokens_case_and_escapes() {
        let found =
            parse(r#"Basic realm="a \"b\"", BEARER Realm=https://t.example/x , service = reg"#);
        assert_eq!(
            found,
            [
                Challenge {
                    scheme: "basic".into(),
                    params: vec![("realm".into(), "a \"b\"".into())],
                },
                Challenge {
                    scheme: "bearer".into(),
                    params: vec![
                        ("realm".into(), "https://t.example/x".into()),
                        ("service".into(), "reg".into()),
                    ],
                },
            ]
        );
    }

    #[test]
    fn garbage_is_skipped_without_panicking() {
        for junk in [
            "",
            "=",
            "==,,",
            "realm=\"x\"",
            "Bearer realm=\"unterminated",
            "Basic dXNlcjpwYXNz==",
            "Bearer \u{e9}\u{1F600}=\"\u{1F600}\"",
            "\"\"\"",
        ] {
            let _ = parse(junk);
        }
        assert!(parse("realm=\"x\"").is_empty());
        assert_eq!(
            parse("Bearer realm=\"unterminated")[0].param("realm"),
            Some("unterminated")
        );
    }
}
