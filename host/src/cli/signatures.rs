//! `plugboard run`'s signature flags.

use std::path::PathBuf;

use anyhow::Context as _;
use plugboard::signature::{SignatureOptions, TrustedKey};

#[derive(Debug, clap::Args)]
pub(crate) struct SignatureArgs {
    /// A PEM public key (ECDSA P-256, as `cosign.pub`) that may sign components; repeatable.
    /// With keys but without --require-signatures, a component whose cosign signature is
    /// present must verify (else `SignatureInvalid`) and an unsigned one runs.
    #[arg(
        long = "signature-public-key-file",
        env = "PLUGBOARD_SIGNATURE_PUBLIC_KEY_FILE",
        value_delimiter = ','
    )]
    key_files: Vec<PathBuf>,
    /// A Secret (`namespace/name`) whose PEM public keys (any data key, e.g. `cosign.pub`) may
    /// sign components, read by the operator (it needs `get` on it) at each verification of a
    /// new digest; repeatable.
    #[arg(
        long = "signature-public-key-secret",
        env = "PLUGBOARD_SIGNATURE_PUBLIC_KEY_SECRET",
        value_delimiter = ','
    )]
    key_secrets: Vec<String>,
    /// Run only components with a cosign signature (a `sha256-<digest>.sig` manifest in their
    /// repository) by one of the keys: unsigned ones are refused with `SignatureMissing`, badly
    /// signed ones with `SignatureInvalid`.
    #[arg(long, env = "PLUGBOARD_REQUIRE_SIGNATURES")]
    require_signatures: bool,
}

impl SignatureArgs {
    /// The policy these flags ask for; keys from files are read now.
    pub(crate) fn options(&self) -> anyhow::Result<SignatureOptions> {
        let keys = self
            .key_files
            .iter()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| TrustedKey::from_file(p))
            .collect::<Result<Vec<_>, _>>()
            .context("--signature-public-key-file")?;
        let key_secrets = self
            .key_secrets
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Ok((ns.to_owned(), name.to_owned()))
                }
                _ => Err(anyhow::anyhow!(
                    "--signature-public-key-secret {s:?} is not namespace/name"
                )),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if self.require_signatures && keys.is_empty() && key_secrets.is_empty() {
            anyhow::bail!(
                "--require-signatures needs --signature-public-key-file or --signature-public-key-secret"
            );
        }
        Ok(SignatureOptions {
            keys,
            key_secrets,
            required: self.require_signatures,
        })
    }
}
