//! Generated passwords that are stable for a coupling: the `password` template filter.
//!
//! A password is derived, never stored: HMAC-SHA256 keyed by a per-Socket secret key over a
//! domain-separated, length-prefixed encoding of (coupling, name, length, block counter). The
//! blocks are mapped to letters and digits by rejection sampling, so every character is uniform
//! over the alphabet. Re-rendering the same template for the same coupling therefore never
//! rotates a credential, while another coupling, name, length or key gives an unrelated password.

use std::fmt;

use hmac::{Hmac, Mac};
use minijinja::value::StringInput;
use sha2::Sha256;

/// Length of the keys [`new_seed_key`] makes.
pub const SEED_KEY_LEN: usize = 32;
/// Shortest key [`PasswordSeed::key`] may be.
pub const MIN_SEED_KEY_LEN: usize = 16;
/// Length of `password` without an argument.
pub const DEFAULT_PASSWORD_LENGTH: usize = 24;
/// Shortest password `password(n)` makes.
pub const MIN_PASSWORD_LENGTH: usize = 8;
/// Longest password `password(n)` makes.
pub const MAX_PASSWORD_LENGTH: usize = 128;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Bytes at or above this are rejected: 248 is the largest multiple of 62 that fits a byte, so
/// `byte % 62` over the accepted bytes is exactly uniform.
const REJECT_FROM: u8 = 248;
/// A key of all zero bytes is never made by [`new_seed_key`]; with it, `password` renders
/// `******` instead of deriving anything. `plugboard plan`, which must not read or create the
/// real key, renders with it so generated credentials are masked in what it prints.
pub const PLACEHOLDER_KEY: [u8; SEED_KEY_LEN] = [0; SEED_KEY_LEN];

/// Versioned domain separator: changing the derivation must change this.
const DOMAIN: &[u8] = b"plugboard.dev/template-password/v1\0";
/// Blocks a derivation may use before giving up; 128 characters need about 5 (32 bytes each).
const MAX_BLOCKS: u32 = 64;

/// What a stable password is derived from: the per-Socket key (kept in a Secret the operator
/// owns, made by [`new_seed_key`]) and the identity of the coupling being rendered.
#[derive(Clone, Copy)]
pub struct PasswordSeed<'a> {
    /// The secret key, at least [`MIN_SEED_KEY_LEN`] bytes.
    pub key: &'a [u8],
    /// The stable identity of the Plug/Socket pair.
    pub coupling: &'a str,
}

impl fmt::Debug for PasswordSeed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordSeed")
            .field("key", &"<redacted>")
            .field("coupling", &self.coupling)
            .finish()
    }
}

/// The operating system could not provide random bytes for a new key.
#[derive(Debug, thiserror::Error)]
#[error("failed to generate a password seed key")]
pub struct SeedKeyError(#[source] getrandom::Error);

/// A fresh random key for [`PasswordSeed::key`] ([`SEED_KEY_LEN`] bytes from the OS).
pub fn new_seed_key() -> Result<[u8; SEED_KEY_LEN], SeedKeyError> {
    let mut key = [0u8; SEED_KEY_LEN];
    getrandom::fill(&mut key).map_err(SeedKeyError)?;
    Ok(key)
}

/// An owned copy of a [`PasswordSeed`], for the filter the environment keeps.
#[derive(Clone)]
pub(super) struct OwnedSeed {
    key: Vec<u8>,
    coupling: String,
}

impl From<PasswordSeed<'_>> for OwnedSeed {
    fn from(seed: PasswordSeed<'_>) -> Self {
        Self {
            key: seed.key.to_vec(),
            coupling: seed.coupling.to_owned(),
        }
    }
}

/// The `password` filter: `{{ "admin" | password }}` or `{{ "admin" | password(32) }}`.
/// Without a seed (nothing is coupled yet) it is an error.
pub(super) fn filter(
    seed: Option<OwnedSeed>,
) -> impl Fn(StringInput<'_>, Option<u64>) -> Result<String, minijinja::Error> + Send + Sync + 'static
{
    move |name: StringInput<'_>, length: Option<u64>| {
        let invalid = |message: String| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message)
        };
        let Some(seed) = &seed else {
            return Err(invalid(
                "password needs a coupling: it is only available in templates rendered for a Plug and its Socket"
                    .to_owned(),
            ));
        };
        let length = match length {
            None => DEFAULT_PASSWORD_LENGTH,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        if seed.key == PLACEHOLDER_KEY {
            return Ok("******".to_owned());
        }
        derive(&seed.key, &seed.coupling, name.as_str(), length).map_err(invalid)
    }
}

/// The password for `name` in `coupling` under `key`, `length` characters of `[A-Za-z0-9]`.
fn derive(key: &[u8], coupling: &str, name: &str, length: usize) -> Result<String, String> {
    if !(MIN_PASSWORD_LENGTH..=MAX_PASSWORD_LENGTH).contains(&length) {
        return Err(format!(
            "password length must be between {MIN_PASSWORD_LENGTH} and {MAX_PASSWORD_LENGTH}, got {length}"
        ));
    }
    if key.len() < MIN_SEED_KEY_LEN {
        return Err(format!(
            "password key must have at least {MIN_SEED_KEY_LEN} bytes"
        ));
    }
    let mut out = String::with_capacity(length);
    for counter in 0..MAX_BLOCKS {
        let mut mac = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|_| "password key is not usable".to_owned())?;
        mac.update(DOMAIN);
        for part in [coupling.as_bytes(), name.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(&(length as u64).to_be_bytes());
        mac.update(&counter.to_be_bytes());
        for byte in mac.finalize().into_bytes() {
            if byte < REJECT_FROM {
                out.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
                if out.len() == length {
                    return Ok(out);
                }
            }
        }
    }
    Err("password derivation did not converge".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn password_is_stable_for_the_same_key_coupling_and_name() {
        let a = derive(KEY, "ns/plug:ns/socket", "admin", 24).unwrap();
        let b = derive(KEY, "ns/plug:ns/socket", "admin", 24).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn password_differs_by_coupling_name_key_and_length() {
        let base = derive(KEY, "c1", "admin", 24).unwrap();
        assert_ne!(base, derive(KEY, "c2", "admin", 24).unwrap());
        assert_ne!(base, derive(KEY, "c1", "reader", 24).unwrap());
        assert_ne!(
            base,
            derive(b"fedcba9876543210fedcba9876543210", "c1", "admin", 24).unwrap()
        );
        assert!(!derive(KEY, "c1", "admin", 32).unwrap().starts_with(&base));
        // Length-prefixing keeps the boundary between coupling and name unambiguous.
        assert_ne!(
            derive(KEY, "ab", "c", 24).unwrap(),
            derive(KEY, "a", "bc", 24).unwrap()
        );
    }

    #[test]
    fn password_has_the_requested_length_and_alphabet() {
        for length in [
            MIN_PASSWORD_LENGTH,
            DEFAULT_PASSWORD_LENGTH,
            MAX_PASSWORD_LENGTH,
        ] {
            let p = derive(KEY, "c", "admin", length).unwrap();
            assert_eq!(p.len(), length);
            assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()), "{p}");
        }
    }

    #[test]
    fn password_characters_cover_the_alphabet_evenly() {
        let mut counts = [0u32; 62];
        for i in 0..200 {
            for b in derive(KEY, "c", &format!("n{i}"), 128).unwrap().bytes() {
                let at = ALPHABET.iter().position(|&a| a == b).unwrap();
                counts[at] += 1;
            }
        }
        // 25600 draws, about 413 per character (deterministic: the key is fixed). The plain
        // `byte % 62` mistake would favour the first 8 characters by 5:4, about 500 each.
        assert!(
            counts.iter().all(|&c| (330..500).contains(&c)),
            "{counts:?}"
        );
        let first: u32 = counts[..8].iter().sum();
        assert!(first / 8 < 450, "{counts:?}");
    }

    #[test]
    fn password_refuses_bad_lengths_and_short_keys() {
        assert!(
            derive(KEY, "c", "a", 7)
                .unwrap_err()
                .contains("between 8 and 128")
        );
        assert!(derive(KEY, "c", "a", 129).unwrap_err().contains("got 129"));
        assert!(
            derive(b"short", "c", "a", 24)
                .unwrap_err()
                .contains("at least 16 bytes")
        );
    }

    #[test]
    fn the_placeholder_key_masks_passwords() {
        let seed = PasswordSeed {
            key: &PLACEHOLDER_KEY,
            coupling: "c",
        };
        let out = crate::engine::template::render(
            "t",
            r#"{{ "db" | password }}"#,
            &crate::engine::template::TemplateContext::default(),
            Some(seed),
            &crate::engine::template::TemplateLimits::default(),
        )
        .unwrap();
        assert_eq!(out, "******");
    }

    #[test]
    fn new_seed_keys_are_random() {
        let a = new_seed_key().unwrap();
        let b = new_seed_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), SEED_KEY_LEN);
    }

    #[test]
    fn seed_debug_hides_the_key() {
        let seed = PasswordSeed {
            key: KEY,
            coupling: "c",
        };
        let shown = format!("{seed:?}");
        assert!(
            !shown.contains("0123456789abcdef") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
