//! `plugboard plugin`: publish, inspect, pull and sign WebAssembly components in OCI
//! registries.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plugboard::oci::media::{WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use plugboard::oci::{ComponentStore, Fetched, ImageRef, RegistryAuth, StoreOptions};
use plugboard::wasm::inspect::{ComponentInfo, inspect};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Push a component to an OCI registry in the CNCF wasm artifact layout (config
    /// `application/vnd.wasm.config.v0+json` listing its world, imports and exports; one
    /// `application/wasm` layer) and print the manifest digest to pin in a spec.
    Push {
        /// The component file (`.wasm`).
        component: PathBuf,
        /// Where to push it: `registry/repository:tag`.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Show a component's world and contract version, exports, imports, size, digest, SDK
    /// version, and whether this operator can run it.
    Inspect {
        /// A component file, or an image reference (`registry/repository:tag` or `@sha256:…`).
        component: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Download a component from an OCI registry, checked against its digest.
    Pull {
        /// The image reference.
        reference: String,
        /// The file to write.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Sign a pushed component the way cosign does (a `sha256-<digest>.sig` manifest next to
    /// it) with an unencrypted ECDSA P-256 key in PEM (PKCS#8 or SEC1). For cosign's encrypted
    /// keys use `cosign sign --key cosign.key`; both are verified alike.
    Sign {
        /// The image reference; a tag is resolved to the digest that is signed.
        reference: String,
        /// The private key file.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Check a pushed component's cosign signature against a public key (`cosign.pub`), as the
    /// operator does with --require-signatures.
    Verify {
        /// The image reference.
        reference: String,
        /// A PEM public key file; repeatable.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

#[derive(Debug, clap::Args)]
struct RegistryArgs {
    /// Speak plain HTTP to the registry (for a registry on loopback); HTTPS otherwise.
    /// Credentials come from the Docker config file (`$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`): its `auths` entries; credential helpers are not used.
    #[arg(long)]
    plain_http: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Push {
            component,
            reference,
            registry,
        } => push(&component, &reference, &registry).await,
        Command::Inspect {
            component,
            json,
            registry,
        } => show(&component, json, &registry).await,
        Command::Pull {
            reference,
            output,
            registry,
        } => {
            let pulled = Pulled::fetch(&reference, &registry).await?;
            std::fs::copy(&pulled.fetched.path, &output)
                .with_context(|| format!("failed to write {}", output.display()))?;
            println!("{}", pulled.fetched.manifest_digest);
            eprintln!(
                "pulled {reference} ({} bytes) to {}",
                pulled.fetched.bytes,
                output.display()
            );
            Ok(())
        }
        Command::Sign {
            reference,
            key,
            registry,
        } => sign(&reference, &key, &registry).await,
        Command::Verify {
            reference,
            key,
            registry,
        } => verify(&reference, &key, &registry).await,
    }
}

impl RegistryArgs {
    fn plain_http_hosts(&self, image: &ImageRef) -> Vec<String> {
        if self.plain_http {
            vec![image.registry().to_owned()]
        } else {
            Vec::new()
        }
    }
}

/// The credentials for `registry` in the Docker config file, if any.
fn docker_auth(registry: &str) -> anyhow::Result<RegistryAuth> {
    let path = match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".docker").join("config.json"),
            None => return Ok(RegistryAuth::Anonymous),
        },
    };
    let json = match std::fs::read(&path) {
        Ok(json) => json,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    // A config with only credential helpers (`credsStore`) has no `auths` to read.
    let has_auths = serde_json::from_slice::<serde_json::Value>(&json)
        .ok()
        .is_some_and(|v| v.get("auths").is_some());
    if !has_auths {
        return Ok(RegistryAuth::Anonymous);
    }
    plugboard::oci::auth_from_docker_config(&json, registry)
        .with_context(|| format!("in {}", path.display()))
}

async fn push(component: &Path, reference: &str, registry: &RegistryArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(component)
        .with_context(|| format!("failed to read {}", component.display()))?;
    let info = inspect(&bytes).with_context(|| format!("{}", component.display()))?;
    let image = ImageRef::parse(reference)?;
    let auth = docker_auth(image.registry())?;
    let created = k8s_openapi::jiff::Timestamp::now().to_string();
    let digest = plugboard::oci::push_with_config(
        reference,
        WASM_CONFIG_MEDIA_TYPE,
        &info.artifact_config(&created),
        WASM_LAYER_MEDIA_TYPE,
        &bytes,
        &auth,
        &registry.plain_http_hosts(&image),
    )
    .await?;
    println!("{digest}");
    eprintln!(
        "pushed {} ({} bytes, {}) to {reference}; pin it as {}/{}@{digest}",
        component.display(),
        info.size,
        info.world.as_deref().unwrap_or("no plugboard world"),
        image.registry(),
        image.repository()
    );
    Ok(())
}

/// A component store in a temporary folder, removed on drop.
struct TempStore {
    store: ComponentStore,
    dir: PathBuf,
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A component fetched into a [`TempStore`].
struct Pulled {
    fetched: Fetched,
    image: ImageRef,
    auth: RegistryAuth,
    temp: TempStore,
}

impl Pulled {
    async fn fetch(reference: &str, registry: &RegistryArgs) -> anyhow::Result<Self> {
        let image = ImageRef::parse(reference)?;
        let auth = docker_auth(image.registry())?;
        let dir = std::env::temp_dir().join(format!(
            "plugboard-plugin-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        let mut options = StoreOptions::new(&dir);
        options.plain_http_hosts = registry.plain_http_hosts(&image);
        // The user's own request, from their machine, not a tenant's: the operator's egress
        // policy does not apply, beyond its refusal of link-local and metadata addresses; a
        // loopback registry (a local one, or `plugboard dev`'s) is allowed.
        options.egress = plugboard::egress::EgressPolicy::new(
            plugboard::egress::EgressOptions::default().allowing_loopback(),
        );
        let temp = TempStore {
            store: ComponentStore::open(options)?,
            dir,
        };
        let fetched = temp.store.fetch(reference, &auth).await?;
        Ok(Pulled {
            fetched,
            image,
            auth,
            temp,
        })
    }
}

async fn show(component: &str, json: bool, registry: &RegistryArgs) -> anyhow::Result<()> {
    let file = Path::new(component);
    let (bytes, path, manifest_digest, _pulled) = if file.is_file() {
        let bytes =
            std::fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
        (bytes, file.to_owned(), None, None)
    } else {
        let pulled = Pulled::fetch(component, registry).await?;
        let bytes = std::fs::read(&pulled.fetched.path)?;
        (
            bytes,
            pulled.fetched.path.clone(),
            Some(pulled.fetched.manifest_digest.clone()),
            Some(pulled),
        )
    };
    let info = inspect(&bytes).with_context(|| component.to_owned())?;
    let runnable = runnable(&info, &path).await;
    if json {
        let mut value = serde_json::to_value(&info)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("manifestDigest".into(), manifest_digest.into());
            object.insert("runnable".into(), runnable.is_ok().into());
            object.insert(
                "runnableProblem".into(),
                runnable.as_ref().err().cloned().into(),
            );
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let none = "(none)";
    println!("component:  {component}");
    if let Some(manifest_digest) = &manifest_digest {
        println!("manifest:   {manifest_digest}");
    }
    println!("digest:     {}", info.digest);
    println!("size:       {} bytes", info.size);
    println!("world:      {}", info.world.as_deref().unwrap_or(none));
    println!(
        "contract:   {}",
        info.contract_version
            .as_deref()
            .map(|v| format!("{}@{v}", plugboard::wasm::inspect::CONTRACT_PACKAGE))
            .as_deref()
            .unwrap_or(none)
    );
    println!(
        "sdk:        {}",
        info.sdk_version
            .as_deref()
            .map(|v| format!("plugboard-sdk {v}"))
            .as_deref()
            .unwrap_or("unknown (no plugboard-sdk-version section)")
    );
    println!("exports:    {}", list(&info.exports));
    println!("imports:    {}", list(&info.imports));
    match runnable {
        Ok(()) => println!(
            "runnable:   yes (this operator runs {})",
            plugboard::wasm::SUPPORTED_WORLDS.join(", ")
        ),
        Err(problem) => println!("runnable:   no: {problem}"),
    }
    Ok(())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join("\n            ")
    }
}

/// Whether this operator's runtime accepts the component: the check it makes before the first
/// hook call (compiling it and linking its imports against what the host provides).
async fn runnable(info: &ComponentInfo, path: &Path) -> Result<(), String> {
    let runtime = plugboard::wasm::WasmRuntime::new(
        plugboard::wasm::WasmOptions::default(),
        plugboard::egress::EgressPolicy::default(),
    )
    .map_err(|e| e.to_string())?;
    let digest = info.digest.clone();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || runtime.load(&digest, &path).map(drop))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

async fn sign(reference: &str, key: &Path, registry: &RegistryArgs) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(key)
        .with_context(|| format!("failed to read {}", key.display()))?;
    let key = plugboard::signature::parse_private_key(&pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let pulled = Pulled::fetch(reference, registry).await?;
    let digest = &pulled.fetched.manifest_digest;
    let repository = format!("{}/{}", pulled.image.registry(), pulled.image.repository());
    let payload = serde_json::to_vec(&plugboard::signature::Payload::new(&repository, digest))?;
    let signature = plugboard::signature::sign(&key, &payload);
    let tag = plugboard::oci::push_signature(
        reference,
        digest,
        &payload,
        &signature,
        &pulled.auth,
        &registry.plain_http_hosts(&pulled.image),
    )
    .await?;
    println!("{repository}:{tag}");
    eprintln!("signed {repository}@{digest}");
    Ok(())
}

async fn verify(reference: &str, keys: &[PathBuf], registry: &RegistryArgs) -> anyhow::Result<()> {
    let keys = keys
        .iter()
        .map(|k| plugboard::signature::TrustedKey::from_file(k))
        .collect::<Result<Vec<_>, _>>()?;
    let pulled = Pulled::fetch(reference, registry).await?;
    let digest = &pulled.fetched.manifest_digest;
    let stored = pulled
        .temp
        .store
        .signatures(reference, &pulled.auth, digest)
        .await?;
    plugboard::signature::judge(&keys, true, reference, digest, stored.as_deref())?;
    println!(
        "{}/{}@{digest}: signature verified",
        pulled.image.registry(),
        pulled.image.repository()
    );
    Ok(())
}
