//! Pulling images through the OCI distribution API (`oci-client` on reqwest with rustls):
//! anonymous access and the registries' bearer-token flow, per-node mirrors tried before a
//! registry, plain HTTP for registries the node marks insecure.
//!
//! Everything from the network is checked before it is used: a manifest or config's size (the
//! node's limit) and digest, the number of layers, each blob's size (at most what its
//! descriptor says) and sha256 while it is downloaded, each layer's uncompressed digest
//! against the config's `diff_ids`, and the unpacked size ([`crate::store`]).
//!
//! A tag is resolved to a digest at the first pull; the image is stored under both.
//! `oci-client` authenticates (its token is cached for the blob requests) and streams blobs;
//! manifests are fetched here with its token, since it reads a manifest whole before its size
//! could be checked: a manifest is read at most to the node's limit. (A token endpoint's
//! answer is still read whole by `oci-client`.)

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::RegistryOperation;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::reference::{self, Reference};
use crate::store::{Image, ImageMeta, Limits, Store, StoreError, digest_of};

/// How a node reaches registries.
#[derive(Clone, Debug)]
pub struct Registries {
    /// Mirrors of a registry (`docker.io` → `mirror.example:5000`), tried in order before it.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Registries (host:port) reached over plain HTTP.
    pub insecure: Vec<String>,
    /// What an image may be.
    pub limits: Limits,
    /// How long an image no run uses stays on the node.
    pub keep_unused: Duration,
}

impl Default for Registries {
    fn default() -> Self {
        Self {
            mirrors: BTreeMap::new(),
            insecure: Vec::new(),
            limits: Limits::default(),
            keep_unused: Duration::from_secs(3600),
        }
    }
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry does not have it.
    #[error("image {image} not found in registry {registry}: {detail}")]
    NotFound { image: String, registry: String, detail: String },
    /// The registry could not be reached.
    #[error("registry {registry} unreachable: {detail}")]
    Unreachable { registry: String, detail: String },
    /// The registry refused access.
    #[error("registry {registry} refused access to {image} (auth): {detail}")]
    AuthRefused { image: String, registry: String, detail: String },
    /// The reference or what the registry sent is not a usable image.
    #[error("{0}")]
    Invalid(String),
    /// Storing it failed (digest mismatches, unsafe layers, sizes).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Media types of manifests and indexes this node reads.
const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// One pull at a time on a node: bounds its network and disk use, and two replicas of one
/// image never download it twice.
static PULLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The image `image` names, from the store if it is there (a tag already on the node is not
/// pulled again), else pulled. `image` may be a reference or an image ID (`sha256:…`, never
/// pulled).
pub async fn ensure(store: &Store, image: &str, regs: &Registries) -> Result<Image, PullError> {
    if let Some(found) = store.find(image) {
        return Ok(found);
    }
    if crate::store::is_digest(image) {
        return Err(PullError::Invalid(format!(
            "no image {image} on this node (an image ID is never pulled)"
        )));
    }
    let _one = PULLING.lock().await;
    if let Some(found) = store.find(image) {
        return Ok(found);
    }
    pull(store, image, regs).await
}

/// Pulls `image` into `store`, through the mirrors of its registry first.
pub async fn pull(store: &Store, image: &str, regs: &Registries) -> Result<Image, PullError> {
    let r = reference::parse(image).map_err(PullError::Invalid)?;
    let mirrors = regs.mirrors.get(r.registry()).cloned().unwrap_or_default();
    for mirror in &mirrors {
        let mut via = r.clone();
        via.set_mirror_registry(mirror.clone());
        match pull_from(store, &r, &via, regs).await {
            Ok(image) => return Ok(image),
            Err(e) => {
                tracing::warn!(%mirror, error = %e, "cannot pull {image} from a mirror; trying the next")
            }
        }
    }
    pull_from(store, &r, &r, regs).await
}

fn clients(regs: &Registries) -> Result<Clients, PullError> {
    // reqwest is built without a crypto provider: this process's is ring (as kube's and the
    // apiserver's TLS).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (connect, read) = (Duration::from_secs(10), Duration::from_secs(60));
    let oci = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(regs.insecure.clone()),
        platform_resolver: None,
        connect_timeout: Some(connect),
        read_timeout: Some(read),
        max_concurrent_download: 4,
        ..ClientConfig::default()
    });
    let http = reqwest::Client::builder()
        .connect_timeout(connect)
        .read_timeout(read)
        .build()
        .map_err(|e| PullError::Invalid(format!("cannot make an HTTP client: {e}")))?;
    Ok(Clients { oci, http })
}

/// An error with its causes (`error sending request: connection refused`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    out
}

/// The error of a registry request, for people and for the replica's status.
fn classify(e: OciDistributionError, image: &str, registry: &str) -> PullError {
    let (image, registry, detail) = (image.to_owned(), registry.to_owned(), chain(&e));
    match &e {
        OciDistributionError::ImageManifestNotFoundError(_) => {
            PullError::NotFound { image, registry, detail }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                PullError::NotFound { image, registry, detail }
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                PullError::AuthRefused { image, registry, detail }
            } else {
                PullError::Invalid(format!("registry {registry}: {detail}"))
            }
        }
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
            PullError::AuthRefused { image, registry, detail }
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            PullError::NotFound { image, registry, detail }
        }
        OciDistributionError::ServerError { code: 401 | 403, .. } => {
            PullError::AuthRefused { image, registry, detail }
        }
        OciDistributionError::RequestError(_) | OciDistributionError::ServerError { .. } => {
            PullError::Unreachable { registry, detail }
        }
        OciDistributionError::DigestError(d) => PullError::Store(StoreError::DigestMismatch {
            what: format!("{image} from {registry}"),
            expected: String::new(),
            actual: d.to_string(),
        }),
        _ => PullError::Invalid(format!("registry {registry}: {detail}")),
    }
}

/// The clients of a pull: `oci-client` and the HTTP client manifests are read with.
struct Clients {
    oci: oci_client::Client,
    http: reqwest::Client,
}

/// A manifest or index by `at` (a tag or digest), read at most to its size limit, and checked
/// against its digest.
async fn document(
    clients: &Clients,
    regs: &Registries,
    at: &Reference,
    shown: &str,
) -> Result<(Value, String), PullError> {
    let registry = at.resolve_registry().to_owned();
    let max = regs.limits.max_document_bytes;
    let token = clients
        .oci
        .auth(at, &RegistryAuth::Anonymous, RegistryOperation::Pull)
        .await
        .map_err(|e| classify(e, shown, &registry))?;
    let scheme = if regs.insecure.contains(&registry) { "http" } else { "https" };
    let url = format!(
        "{scheme}://{registry}/v2/{}/manifests/{}{}",
        at.repository(),
        at.digest().or(at.tag()).unwrap_or("latest"),
        at.namespace().map(|ns| format!("?ns={ns}")).unwrap_or_default()
    );
    let mut request = clients.http.get(&url).header(reqwest::header::ACCEPT, ACCEPT.join(", "));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let unreachable =
        |e: reqwest::Error| PullError::Unreachable { registry: registry.clone(), detail: chain(&e) };
    let mut response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let detail = format!("{status} for {url}");
    match status.as_u16() {
        404 => return Err(PullError::NotFound { image: shown.to_owned(), registry, detail }),
        401 | 403 => return Err(PullError::AuthRefused { image: shown.to_owned(), registry, detail }),
        _ if !status.is_success() => {
            return Err(PullError::Invalid(format!("registry {registry} answered {detail}")));
        }
        _ => {}
    }
    let too_big = || {
        PullError::Invalid(format!("the manifest of {shown} is larger than the node's limit of {max} bytes"))
    };
    if response.content_length().is_some_and(|n| n > max) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    let actual = digest_of(&body);
    let expected = at.digest().map_or_else(|| actual.clone(), str::to_owned);
    if actual != expected {
        return Err(StoreError::DigestMismatch {
            what: format!("the manifest of {shown}"),
            expected,
            actual,
        }
        .into());
    }
    let value = serde_json::from_slice(&body)
        .map_err(|e| PullError::Invalid(format!("the manifest of {shown} is not JSON: {e}")))?;
    Ok((value, actual))
}

/// The OCI name of this machine's architecture.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Downloads the blob `desc` into `out`, at most its declared size (and `max`), checking its
/// digest as it comes.
async fn blob(
    clients: &Clients,
    at: &Reference,
    desc: &OciDescriptor,
    max: u64,
    out: &mut (impl Write + Send),
    shown: &str,
) -> Result<(), PullError> {
    let registry = at.resolve_registry().to_owned();
    let what = format!("blob {} of {shown}", desc.digest);
    let declared = u64::try_from(desc.size).unwrap_or(0);
    if declared > max {
        return Err(StoreError::TooLarge { limit: max }.into());
    }
    let mut stream =
        clients.oci.pull_blob_stream(at, desc).await.map_err(|e| classify(e, shown, &registry))?;
    let (mut hash, mut got) = (Sha256::new(), 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let text = chain(&e);
            if text.to_lowercase().contains("digest") {
                // oci-client's own check ("… Expected X, got Y") came first.
                let actual = text.rsplit("got ").next().unwrap_or(&text).trim().to_owned();
                PullError::Store(StoreError::DigestMismatch {
                    what: what.clone(),
                    expected: desc.digest.clone(),
                    actual,
                })
            } else {
                PullError::Unreachable { registry: registry.clone(), detail: format!("reading {what}: {e}") }
            }
        })?;
        got += chunk.len() as u64;
        if got > declared {
            return Err(PullError::Invalid(format!(
                "{what} is longer than the {declared} bytes its manifest says"
            )));
        }
        hash.update(&chunk);
        out.write_all(&chunk).map_err(|e| PullError::Invalid(format!("cannot write {what}: {e}")))?;
    }
    let actual = format!("sha256:{:x}", hash.finalize());
    if actual != desc.digest {
        return Err(StoreError::DigestMismatch { what, expected: desc.digest.clone(), actual }.into());
    }
    if got != declared {
        return Err(PullError::Invalid(format!("{what} has {got} bytes, its manifest says {declared}")));
    }
    Ok(())
}

fn descriptor(v: &Value, shown: &str) -> Result<OciDescriptor, PullError> {
    let desc: OciDescriptor = serde_json::from_value(v.clone())
        .map_err(|e| PullError::Invalid(format!("a descriptor in the manifest of {shown}: {e}")))?;
    if !crate::store::is_digest(&desc.digest) {
        return Err(PullError::Invalid(format!("{shown}: {:?} is not a sha256 digest", desc.digest)));
    }
    Ok(desc)
}

/// Pulls `r` through `via` (itself, or with a mirror set).
async fn pull_from(
    store: &Store,
    r: &Reference,
    via: &Reference,
    regs: &Registries,
) -> Result<Image, PullError> {
    let shown = r.whole();
    let limits = regs.limits;
    let clients = clients(regs)?;
    let started = std::time::Instant::now();
    let (mut manifest, top) = document(&clients, regs, via, &shown).await?;
    let pinned = reference::pinned(r, &top);
    let mut at = via.clone_with_digest(top.clone());
    if manifest.get("manifests").is_some() {
        // An index: this machine's platform.
        let arch = architecture();
        let entry = manifest["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
            .ok_or_else(|| PullError::Invalid(format!("{shown} has no image for linux/{arch}")))?;
        let desc = descriptor(entry, &shown)?;
        at = via.clone_with_digest(desc.digest.clone());
        manifest = document(&clients, regs, &at, &shown).await?.0;
    }
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    if layers.len() > limits.max_layers {
        return Err(PullError::Invalid(format!(
            "{shown} has {} layers, more than the node's limit of {}",
            layers.len(),
            limits.max_layers
        )));
    }
    let config_desc = descriptor(&manifest["config"], &shown)?;
    let mut config = Vec::new();
    blob(&clients, &at, &config_desc, limits.max_document_bytes, &mut config, &shown).await?;
    let tags: Vec<String> = if r.digest().is_none() { vec![shown.clone()] } else { Vec::new() };
    if store.find(&config_desc.digest).is_some() {
        // The same image under another name: nothing to download.
        return Ok(store.name(&config_desc.digest, &tags, &[pinned])?);
    }
    let diff_ids: Vec<String> = serde_json::from_slice::<Value>(&config)
        .ok()
        .and_then(|c| c["rootfs"]["diff_ids"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect();
    let mut builder = store.begin(limits)?;
    let mut downloaded = 0u64;
    for (i, layer) in layers.iter().enumerate() {
        let desc = descriptor(layer, &shown)?;
        let path = builder.scratch(&format!("layer-{i}"));
        let mut file = std::fs::File::create(&path)
            .map_err(|e| PullError::Invalid(format!("cannot write {}: {e}", path.display())))?;
        let room = limits.max_unpacked_bytes.saturating_sub(downloaded);
        blob(&clients, &at, &desc, room, &mut file, &shown).await?;
        downloaded += u64::try_from(desc.size).unwrap_or(0);
        let expected = diff_ids.get(i).cloned();
        builder = tokio::task::spawn_blocking(move || -> Result<_, PullError> {
            let file = std::fs::File::open(&path)
                .map_err(|e| PullError::Invalid(format!("cannot read {}: {e}", path.display())))?;
            let diff_id = builder.apply_layer(file)?;
            let _ = std::fs::remove_file(&path);
            match expected {
                Some(expected) if expected != diff_id => Err(StoreError::DigestMismatch {
                    what: format!("layer {i} (uncompressed) of the image"),
                    expected,
                    actual: diff_id,
                }
                .into()),
                _ => Ok(builder),
            }
        })
        .await
        .map_err(|e| PullError::Invalid(format!("unpacking a layer: {e}")))??;
    }
    let meta = ImageMeta { tags, repo_digests: vec![pinned], ..ImageMeta::default() };
    let image = tokio::task::spawn_blocking(move || builder.finish(&config, meta))
        .await
        .map_err(|e| PullError::Invalid(format!("storing the image: {e}")))??;
    tracing::info!(
        "pulled {shown} ({}, {} layers, {downloaded} bytes) in {:?}",
        image.pinned(),
        layers.len(),
        started.elapsed()
    );
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;
    use axum::response::IntoResponse;

    /// A hostile registry (what docker-registry never sends): a manifest larger than the node
    /// allows, too many layers, a blob longer than its descriptor says.
    async fn hostile() -> String {
        let layer = |size: usize| json_layer(&format!("sha256:{}", "b".repeat(64)), size);
        let manifest = |layers: Vec<Value>| {
            serde_json::json!({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": json_layer(&format!("sha256:{}", "c".repeat(64)), 2), "layers": layers,
            })
            .to_string()
        };
        let many = manifest((0..200).map(|_| layer(10)).collect());
        let long = manifest(vec![layer(10)]);
        let typed = |body: String| {
            ([(header::CONTENT_TYPE, "application/vnd.oci.image.manifest.v1+json")], body).into_response()
        };
        let app = axum::Router::new()
            .route("/v2/", axum::routing::get(|| async { "{}" }))
            .route(
                "/v2/big/manifests/1",
                axum::routing::get(move || async move { typed("x".repeat(2 << 20)) }),
            )
            .route("/v2/many/manifests/1", axum::routing::get(move || async move { typed(many) }))
            .route("/v2/long/manifests/1", axum::routing::get(move || async move { typed(long) }))
            .route("/v2/long/blobs/{digest}", axum::routing::get(|| async { "{}".repeat(50) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn json_layer(digest: &str, size: usize) -> Value {
        serde_json::json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size })
    }

    #[tokio::test]
    async fn what_a_registry_sends_is_bounded() {
        let host = hostile().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let regs = Registries {
            insecure: vec![host.clone()],
            limits: Limits { max_document_bytes: 1 << 20, ..Limits::default() },
            ..Registries::default()
        };
        let err = pull(&store, &format!("{host}/big:1"), &regs).await.unwrap_err().to_string();
        assert!(err.contains("larger than the node's limit of 1048576 bytes"), "{err}");
        let err = pull(&store, &format!("{host}/many:1"), &regs).await.unwrap_err().to_string();
        assert!(err.contains("200 layers, more than the node's limit of 128"), "{err}");
        let err = pull(&store, &format!("{host}/long:1"), &regs).await.unwrap_err().to_string();
        assert!(err.contains("longer than the 2 bytes its manifest says"), "{err}");
        let err = pull(&store, "127.0.0.1:1/web:1", &regs).await.unwrap_err();
        assert!(matches!(err, PullError::Unreachable { .. }), "{err}");
        assert!(store.list().is_empty());
    }
}
