//! Credentials of a test control plane: a CA, the API server's serving certificate, the
//! service-account token signing key, and an admin bearer token.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

use crate::Error;

/// Files written into the control plane's folder.
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate (PEM) that signed the serving certificate.
    pub ca_cert: PathBuf,
    /// The API server's serving certificate (PEM), valid for `127.0.0.1` and `localhost`.
    pub serving_cert: PathBuf,
    /// Its private key (PEM).
    pub serving_key: PathBuf,
    /// Service-account token signing key (PEM, private).
    pub sa_key: PathBuf,
    /// Its public key (PEM), for verifying tokens.
    pub sa_pub: PathBuf,
    /// Static token file for `--token-auth-file` holding the admin token.
    pub token_file: PathBuf,
    /// The admin bearer token (member of `system:masters`).
    pub admin_token: String,
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(Error::io("write", path))
}

/// Generates fresh credentials into `dir`.
pub fn generate(dir: &Path) -> Result<Pki, Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "plugboard-test-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;

    let sa_key = KeyPair::generate()?;

    // The token only needs to be unguessable by other local users; derive it from fresh key
    // material rather than adding a random-number dependency.
    let admin_token = hex::encode(&Sha256::digest(KeyPair::generate()?.serialize_der())[..16]);

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
        token_file: dir.join("tokens.csv"),
        admin_token,
    };
    write(&pki.ca_cert, &ca_cert.pem())?;
    write(&pki.serving_cert, &serving_cert.pem())?;
    write(&pki.serving_key, &serving_key.serialize_pem())?;
    write(&pki.sa_key, &sa_key.serialize_pem())?;
    write(&pki.sa_pub, &sa_key.public_key_pem())?;
    write(
        &pki.token_file,
        &format!(
            "{},plugboard-admin,plugboard-admin,\"system:masters\"\n",
            pki.admin_token
        ),
    )?;
    Ok(pki)
}
