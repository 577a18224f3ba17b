//! The pull client against registries played by loopback HTTP servers: token challenges,
//! redirects to storage, the egress policy at every hop, and capped manifest reads. (The real
//! registry's behaviour is covered by the `oci` end-to-end tests.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;

use super::*;
use crate::egress::{EgressOptions, EgressPolicy};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What a stub answers.
enum Answer {
    Bytes(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// 200 with a body that never ends (chunked, no length).
    Endless,
}

/// A request a stub received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

type Handler = Arc<dyn Fn(&str, Option<&str>) -> Answer + Send + Sync>;

struct Stub {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Bytes of endless bodies sent so far.
    streamed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    async fn start(ip: &str, handler: Handler) -> Stub {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let streamed = Arc::new(AtomicU64::new(0));
        let (seen_in, streamed_in) = (seen.clone(), streamed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, streamed, handler) =
                    (seen_in.clone(), streamed_in.clone(), handler.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (seen, streamed, handler) =
                            (seen.clone(), streamed.clone(), handler.clone());
                        async move {
                            let path = match req.uri().query() {
                                Some(q) => format!("{}?{q}", req.uri().path()),
                                None => req.uri().path().to_owned(),
                            };
                            let authorization = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned());
                            seen.lock().unwrap().push(Seen {
                                path: path.clone(),
                                authorization: authorization.clone(),
                            });
                            let response: Response<Body> =
                                match handler(&path, authorization.as_deref()) {
                                    Answer::Bytes(status, headers, body) => {
                                        let mut r = Response::builder().status(status);
                                        for (k, v) in headers {
                                            r = r.header(k, v);
                                        }
                                        r.body(Full::new(Bytes::from(body)).boxed()).unwrap()
                                    }
                                    Answer::Endless => {
                                        let chunks = futures::stream::repeat(()).map(move |()| {
                                            streamed.fetch_add(64 * 1024, Ordering::Relaxed);
                                            Ok::<_, Infallible>(Frame::data(Bytes::from(
                                                vec![b' '; 64 * 1024],
                                            )))
                                        });
                                        Response::new(http_body_util::BodyExt::boxed(
                                            StreamBody::new(chunks),
                                        ))
                                    }
                                };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Stub {
            addr,
            seen,
            streamed,
            task,
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0 a component for the pull tests";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn manifest() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": media::WASM_CONFIG_MEDIA_TYPE, "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": media::WASM_LAYER_MEDIA_TYPE, "digest": sha256(COMPONENT),
                    "size": COMPONENT.len()}],
    }))
    .unwrap()
}

fn ok(body: Vec<u8>) -> Answer {
    Answer::Bytes(200, Vec::new(), body)
}

fn redirect(to: String) -> Answer {
    Answer::Bytes(307, vec![("location", to)], Vec::new())
}

/// A store whose pulls may speak plain HTTP to `plain` and connect as `egress` permits.
fn store(
    dir: &tempfile::TempDir,
    plain: &[&Stub],
    egress: EgressOptions,
    tune: impl FnOnce(&mut StoreOptions),
) -> ComponentStore {
    let mut options = StoreOptions::new(dir.path().join("cache"));
    options.plain_http_hosts = plain.iter().map(|s| s.host()).collect();
    options.egress = EgressPolicy::new(egress);
    tune(&mut options);
    ComponentStore::open(options).unwrap()
}

/// Only `127.0.0.1` of loopback (so `127.0.0.2` stays refused as loopback).
fn only_127_0_0_1() -> EgressOptions {
    EgressOptions {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
        ..Default::default()
    }
}

/// A registry on 127.0.0.1 that wants a Bearer token from `realm`, then serves the manifest
/// and redirects the blob to `storage`.
async fn registry(realm: String, storage: String) -> Stub {
    Stub::start(
        "127.0.0.1",
        Arc::new(move |path: &str, authorization: Option<&str>| {
            if authorization != Some("Bearer t0k3n") {
                let challenge = format!(r#"Bearer realm="{realm}",service="stub""#);
                return Answer::Bytes(401, vec![("www-authenticate", challenge)], Vec::new());
            }
            if path == "/v2/hooks/manifests/1" {
                ok(manifest())
            } else if path == format!("/v2/hooks/blobs/{}", sha256(COMPONENT)) {
                redirect(format!("{storage}/bucket/blob?signature=s3cr3t"))
            } else {
                Answer::Bytes(404, Vec::new(), Vec::new())
            }
        }),
    )
    .await
}

/// A token service that hands out a token for the right Basic credentials only.
async fn token_service(ip: &str) -> Stub {
    Stub::start(
        ip,
        Arc::new(|path: &str, authorization: Option<&str>| {
            // base64("robot:hunter2")
            if path.starts_with("/token?") && authorization == Some("Basic cm9ib3Q6aHVudGVyMg==") {
                ok(br#"{"token":"t0k3n","expires_in":300}"#.to_vec())
            } else {
                Answer::Bytes(401, Vec::new(), Vec::new())
            }
        }),
    )
    .await
}

async fn storage(ip: &str) -> Stub {
    Stub::start(
        ip,
        Arc::new(|_: &str, _: Option<&str>| ok(COMPONENT.to_vec())),
    )
    .await
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn robot() -> RegistryAuth {
    RegistryAuth::Basic {
        username: "robot".into(),
        password: "hunter2".into(),
    }
}

#[tokio::test]
async fn bearer_token_from_the_realm_and_a_blob_redirect_to_storage() {
    let tokens = token_service("127.0.0.1").await;
    let blobs = storage("127.0.0.1").await;
    let reg = registry(
        format!("http://{}/token", tokens.host()),
        format!("http://{}", blobs.host()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir, &[&reg, &tokens, &blobs], only_127_0_0_1(), |_| {});
    let image = format!("{}/hooks:1", reg.host());

    let fetched = store.fetch(&image, &robot()).await.unwrap();
    assert_eq!(fetched.digest, sha256(COMPONENT));
    assert_eq!(std::fs::read(&fetched.path).unwrap(), COMPONENT);

    let asked = tokens.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].path,
        "/token?service=stub&scope=repository%3Ahooks%3Apull"
    );
    // The storage got the download without the registry's token or the credentials.
    let downloads = blobs.seen();
    assert_eq!(downloads.len(), 1);
    assert_eq!(downloads[0].authorization, None);
    assert!(downloads[0].path.starts_with("/bucket/blob?"));

    // The token is reused: the next pull asks the token service nothing.
    store.fetch(&image, &robot()).await.unwrap();
    assert_eq!(tokens.seen().len(), 1);
    // And an anonymous pull does not get the robot's token.
    let err = store
        .fetch(&image, &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OciError::Unauthorized {
                with_credentials: false,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_blob_redirect_to_a_denied_address_is_refused_at_that_hop() {
    let tokens = token_service("127.0.0.1").await;
    // Loopback other than 127.0.0.1: refused by the policy.
    let denied = storage("127.0.0.2").await;
    for (name, storage_url, static_hosts) in [
        (
            "literal",
            format!("http://{}", denied.host()),
            HashMap::new(),
        ),
        // A name resolving (as a rebinding DNS server would) to the denied address.
        (
            "name",
            format!("http://storage.rebind.test:{}", denied.addr.port()),
            HashMap::from([(
                "storage.rebind.test".to_owned(),
                vec![IpAddr::from([127, 0, 0, 2])],
            )]),
        ),
    ] {
        let reg = registry(format!("http://{}/token", tokens.host()), storage_url).await;
        let dir = tempfile::tempdir().unwrap();
        let egress = EgressOptions {
            static_hosts,
            ..only_127_0_0_1()
        };
        let plain = vec![
            reg.host(),
            tokens.host(),
            denied.host(),
            format!("storage.rebind.test:{}", denied.addr.port()),
        ];
        let store = store(&dir, &[], egress, |o| o.plain_http_hosts = plain);
        let err = store
            .fetch(&format!("{}/hooks:1", reg.host()), &robot())
            .await
            .unwrap_err();
        let OciError::EgressDenied { source, .. } = &err else {
            panic!("{name}: expected EgressDenied, got {err:?}");
        };
        assert!(
            source.to_string().contains("127.0.0.2") && source.to_string().contains("loopback"),
            "{name}: {source}"
        );
        assert_eq!(err.reason(), "EgressDenied");
        assert!(!err.is_transient());
        let message = chain(&err);
        assert!(message.contains("--egress-allow"), "{name}: {message}");
        assert!(!message.contains("s3cr3t"), "{name}: {message}");
    }
    assert!(denied.seen().is_empty(), "the denied storage was reached");
}

#[tokio::test]
async fn a_token_realm_on_a_denied_address_gets_no_credentials() {
    let tokens = token_service("127.0.0.2").await;
    let blobs = storage("127.0.0.1").await;
    let reg = registry(
        format!("http://{}/token", tokens.host()),
        format!("http://{}", blobs.host()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir, &[&reg, &tokens, &blobs], only_127_0_0_1(), |_| {});
    let err = store
        .fetch(&format!("{}/hooks:1", reg.host()), &robot())
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::EgressDenied { .. }), "{err:?}");
    assert!(
        tokens.seen().is_empty(),
        "credentials reached the denied realm"
    );
}

#[tokio::test]
async fn a_registry_on_a_denied_address_is_never_contacted() {
    let blobs = storage("127.0.0.1").await;
    let reg = registry(
        "http://127.0.0.1:1/token".into(),
        format!("http://{}", blobs.host()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // The default policy: loopback refused.
    let store = store(&dir, &[&reg], EgressOptions::default(), |_| {});
    let err = store
        .fetch(&format!("{}/hooks:1", reg.host()), &robot())
        .await
        .unwrap_err();
    let OciError::EgressDenied {
        registry, source, ..
    } = &err
    else {
        panic!("expected EgressDenied, got {err:?}");
    };
    assert_eq!(registry, &reg.host());
    assert!(
        source
            .to_string()
            .contains("refuses 127.0.0.1: it is a loopback address"),
        "{source}"
    );
    assert!(reg.seen().is_empty());
}

#[tokio::test]
async fn redirects_to_plain_http_elsewhere_and_redirect_loops_are_refused() {
    let blobs = storage("127.0.0.1").await;
    let looping = Arc::new(Mutex::new(String::new()));
    let looping_in = looping.clone();
    let blob_path = format!("/v2/hooks/blobs/{}", sha256(COMPONENT));
    let blobs_url = format!("http://{}", blobs.host());
    let reg = Stub::start(
        "127.0.0.1",
        Arc::new(move |path: &str, _: Option<&str>| {
            if path == "/v2/hooks/manifests/1" {
                ok(manifest())
            } else if path == "/v2/loop/manifests/1" {
                redirect(looping_in.lock().unwrap().clone())
            } else if path == blob_path {
                redirect(format!("{blobs_url}/blob"))
            } else {
                Answer::Bytes(404, Vec::new(), Vec::new())
            }
        }),
    )
    .await;
    *looping.lock().unwrap() = format!("http://{}/v2/loop/manifests/1", reg.host());
    let dir = tempfile::tempdir().unwrap();
    // The storage is not among the plain-HTTP hosts.
    let store = store(
        &dir,
        &[&reg],
        EgressOptions::default().allowing_loopback(),
        |_| {},
    );
    let err = store
        .fetch(&format!("{}/hooks:1", reg.host()), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    let message = chain(&err);
    assert!(message.contains("HTTPS only"), "{message}");
    assert!(blobs.seen().is_empty());

    let err = store
        .fetch(&format!("{}/loop:1", reg.host()), &RegistryAuth::Anonymous)
        .await
        .unwrap_err();
    let message = chain(&err);
    assert!(message.contains("more than 5 redirects"), "{message}");
    let hops = reg
        .seen()
        .iter()
        .filter(|s| s.path == "/v2/loop/manifests/1")
        .count();
    assert_eq!(hops, 1 + pull::MAX_REDIRECTS);
}

#[tokio::test]
async fn an_oversized_manifest_is_refused_without_reading_it_whole() {
    let announced = Stub::start(
        "127.0.0.1",
        Arc::new(|_: &str, _: Option<&str>| ok(vec![b' '; 256 * 1024])),
    )
    .await;
    let endless = Stub::start(
        "127.0.0.1",
        Arc::new(|_: &str, _: Option<&str>| Answer::Endless),
    )
    .await;
    for stub in [&announced, &endless] {
        let dir = tempfile::tempdir().unwrap();
        let store = store(
            &dir,
            &[stub],
            EgressOptions::default().allowing_loopback(),
            |o| {
                o.max_manifest_bytes = 4096;
            },
        );
        let err = store
            .fetch(
                &format!("{}/hooks:1", stub.host()),
                &RegistryAuth::Anonymous,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                OciError::TooLarge {
                    what: "manifest",
                    limit: 4096,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.reason(), "ImageTooLarge");
    }
    // The endless manifest was abandoned after little more than the limit (what the sockets
    // buffered), not read on.
    let sent = endless.streamed.load(Ordering::Relaxed);
    assert!(sent < 16 * 1024 * 1024, "{sent} bytes sent");
}
