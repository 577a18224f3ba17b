//! The environment end-to-end tests run in: one control plane per test process, shared by its
//! tests, with CRDs installed, a fresh namespace per test, and clients that act as chosen
//! ServiceAccounts so RBAC is exercised for real.
//!
//! Set `PLUGBOARD_TEST_KUBECONFIG` to run the tests against an existing cluster instead (its
//! current context must be cluster-admin).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};
use tokio::sync::OnceCell;

use crate::Error;
use crate::cluster::{ControlPlane, ControlPlaneOptions};

/// Environment variable pointing the tests at an existing cluster's kubeconfig.
pub const EXTERNAL_KUBECONFIG_ENV: &str = "PLUGBOARD_TEST_KUBECONFIG";

/// Field manager used for what the test support applies.
const FIELD_MANAGER: &str = "plugboard-tests";

enum Backend {
    /// Behind a lock so that [`TestEnv::restart_api_server`] can restart its processes.
    Local(Box<tokio::sync::Mutex<ControlPlane>>),
    External(PathBuf),
}

struct Shared {
    backend: Backend,
}

static SHARED: OnceCell<Shared> = OnceCell::const_new();

/// A handle on the shared test environment. Cheap to create; create one per test.
#[derive(Clone)]
pub struct TestEnv {
    config: Config,
    client: Client,
    kubeconfig_path: PathBuf,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("cluster_url", &self.config.cluster_url)
            .field("kubeconfig_path", &self.kubeconfig_path)
            .finish()
    }
}

async fn config_from_file(path: &Path) -> Result<Config, Error> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

impl TestEnv {
    /// Joins the control plane of this test process, starting it (and building it, the first
    /// time on a machine) if this is the first test to ask, and installs `crds` once.
    pub async fn shared(
        crds: impl FnOnce() -> Vec<CustomResourceDefinition>,
    ) -> Result<Self, Error> {
        let shared = SHARED
            .get_or_try_init(|| async {
                let backend =
                    match std::env::var_os(EXTERNAL_KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
                        Some(path) => Backend::External(PathBuf::from(path)),
                        None => Backend::Local(Box::new(tokio::sync::Mutex::new(
                            ControlPlane::start(ControlPlaneOptions::default()).await?,
                        ))),
                    };
                let shared = Shared { backend };
                let env = Self::from_shared(&shared).await?;
                install_crds(&env.client, crds()).await?;
                Ok::<_, Error>(shared)
            })
            .await?;
        Self::from_shared(shared).await
    }

    async fn from_shared(shared: &Shared) -> Result<Self, Error> {
        let (config, kubeconfig_path) = match &shared.backend {
            Backend::Local(cp) => {
                let cp = cp.lock().await;
                (cp.config().await?, cp.kubeconfig_path().to_owned())
            }
            Backend::External(path) => (config_from_file(path).await?, path.clone()),
        };
        let client = Client::try_from(config.clone()).map_err(Error::kube("create a client"))?;
        Ok(Self {
            config,
            client,
            kubeconfig_path,
        })
    }

    /// Restarts the API server and etcd of this test process's control plane (see
    /// [`ControlPlane::restart_api_server`]); every test sharing it sees the outage. Returns how
    /// long the outage lasted, or `None` against an external cluster, which is not restarted.
    pub async fn restart_api_server(&self) -> Result<Option<Duration>, Error> {
        match SHARED.get().map(|shared| &shared.backend) {
            Some(Backend::Local(cp)) => Ok(Some(cp.lock().await.restart_api_server().await?)),
            Some(Backend::External(_)) | None => Ok(None),
        }
    }

    /// An admin client for this test.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The admin client configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Creates a fresh namespace named `<prefix>-<random>` and waits for its `default`
    /// ServiceAccount (created by the controller manager, as on a real cluster).
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, Error> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some([("plugboard.dev/test".to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = namespaces
            .create(&PostParams::default(), &ns)
            .await
            .map_err(Error::kube(format!("create namespace {prefix}-*")))?;
        let name = created.metadata.name.unwrap_or_default();
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if sas
                .get_opt("default")
                .await
                .map_err(Error::kube(format!("get ServiceAccount {name}/default")))?
                .is_some()
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: format!("ServiceAccount {name}/default"),
                    seconds: 60,
                    log_tail: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(TestNamespace {
            name,
            client: self.client.clone(),
        })
    }

    /// A client that authenticates as ServiceAccount `namespace/name` (created if missing),
    /// with a token from the TokenRequest API. It has exactly the RBAC permissions granted to
    /// that ServiceAccount.
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Client, Error> {
        let config = self.service_account_config(namespace, name).await?;
        Client::try_from(config).map_err(Error::kube("create a ServiceAccount client"))
    }

    /// The client configuration of [`TestEnv::service_account_client`].
    pub async fn service_account_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Config, Error> {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(e) => {
                return Err(Error::kube(format!(
                    "create ServiceAccount {namespace}/{name}"
                ))(e));
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let issued: TokenRequest = sas
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .map_err(Error::kube(format!(
                "request a token for ServiceAccount {namespace}/{name}"
            )))?;
        let token = issued
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::NoToken(format!("{namespace}/{name}")))?;
        let mut config = self.config.clone();
        config.auth_info = AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        Ok(config)
    }
}

/// A namespace created for one test.
#[derive(Clone)]
pub struct TestNamespace {
    name: String,
    client: Client,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An API handle for namespaced resources of type `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace (a failed test leaves it for inspection instead).
    pub async fn delete(self) -> Result<(), Error> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(&self.name, &Default::default())
            .await
            .map_err(Error::kube(format!("delete namespace {}", self.name)))?;
        Ok(())
    }
}

/// Server-side applies `crds` and waits until each is established.
pub async fn install_crds(
    client: &Client,
    crds: Vec<CustomResourceDefinition>,
) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(Error::kube(format!("apply CRD {name}")))?;
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(Duration::from_secs(30), established).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Error::NotReady {
                    what: format!("CRD {name} ({e})"),
                    seconds: 30,
                    log_tail: String::new(),
                });
            }
            Err(_) => {
                return Err(Error::NotReady {
                    what: format!("CRD {name} to be established"),
                    seconds: 30,
                    log_tail: String::new(),
                });
            }
        }
    }
    Ok(())
}
