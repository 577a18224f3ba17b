//! `database`: the logic of a PostgreSQL Socket that gives every coupled Plug its own database
//! and user (see this plugin's README and `samples/` for the whole Socket).
//!
//! Its `config` hook names the coupling's database, user and Kubernetes objects; the Socket's
//! templates do the rest: a stable generated password (`{{ 'db' | password }}`) as a result, a
//! per-coupling Secret and a Job that creates the database when the Plug couples, and a Job that
//! drops it when the Plug decouples.
//!
//! On the Socket side `config` returns:
//!
//! | key | value |
//! | --- | --- |
//! | `database` | the Plug's `data.database` when given (validated), else `<namespace>_<name>_<hash>` made a valid PostgreSQL identifier |
//! | `user` | the same as `database` |
//! | `objectName` | a DNS-1123 name for the coupling's Secret and Jobs, `db-<namespace>-<name>-<hash>` |
//!
//! The hash (8 hex digits of FNV-1a over `<namespace>/<name>`) keeps names distinct when
//! truncation or character replacement would make two Plugs' names collide. Names depend only
//! on the Plug's namespace and name, so they are stable across re-renders and restarts.

use plugboard_sdk::{Apparatus, ConfigInput, HookError, HookResult, Side, Values};

/// The apparatus.
#[derive(Debug, Default)]
pub struct Database;

/// PostgreSQL identifiers are at most 63 bytes.
const MAX_IDENTIFIER: usize = 63;

/// 32-bit FNV-1a: small, stable across builds and platforms, enough to tell names apart.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// `text` lowercased with every character outside `[a-z0-9]` replaced by `sep`, runs of `sep`
/// folded into one.
fn fold(text: &str, sep: char) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with(sep) {
            out.push(sep);
        }
    }
    out
}

/// `<prefix><ns><sep><name><sep><hash>`, truncated (before the hash) to `max` bytes.
fn derived(prefix: &str, namespace: &str, name: &str, sep: char, max: usize) -> String {
    let hash = format!("{:08x}", fnv1a(&format!("{namespace}/{name}")));
    let body = fold(&format!("{namespace}{sep}{name}"), sep);
    let room = max - prefix.len() - 1 - hash.len();
    let body: String = body.chars().take(room).collect();
    let body = body.trim_matches(sep);
    format!("{prefix}{body}{sep}{hash}")
}

/// A database name a Plug asked for: a lowercase PostgreSQL identifier that needs no quoting.
fn validate_database(name: &str) -> HookResult {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if first_ok && rest_ok && name.len() <= MAX_IDENTIFIER && !name.starts_with("pg_") {
        Ok(())
    } else {
        Err(HookError::invalid_input(format!(
            "data.database {name:?} must be 1 to 63 lowercase letters, digits or '_', start with a letter or '_', and not start with 'pg_'"
        )))
    }
}

impl Apparatus for Database {
    fn config(&self, input: ConfigInput) -> HookResult<Values> {
        if input.side != Side::Socket {
            // Only the Socket's config carries the names.
            return Ok(Values::new());
        }
        let namespace = input.plug.namespace();
        let name = input.plug.name();
        if namespace.is_empty() || name.is_empty() {
            return Err(HookError::invalid_input(
                "the Plug has no namespace or name",
            ));
        }
        let database = match input.plug_data.get("database").filter(|d| !d.is_empty()) {
            Some(asked) => {
                validate_database(asked)?;
                asked.clone()
            }
            None => {
                let name = derived("", namespace, name, '_', MAX_IDENTIFIER);
                // An identifier may not start with a digit.
                if name.starts_with(|c: char| c.is_ascii_digit()) {
                    derived("db_", namespace, input.plug.name(), '_', MAX_IDENTIFIER)
                } else {
                    name
                }
            }
        };
        Ok(Values::from([
            ("database".to_owned(), database.clone()),
            ("user".to_owned(), database),
            (
                "objectName".to_owned(),
                derived("db-", namespace, name, '-', 63),
            ),
        ]))
    }
}

plugboard_sdk::export!(Database);

#[cfg(test)]
mod tests;
