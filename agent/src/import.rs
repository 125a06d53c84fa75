//! `ui image import`: images from a file, for nodes that reach no registry. The file is a tar of
//! an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) or a `docker save`
//! archive (`manifest.json`, a config and a tar per layer). It is read in place, never
//! unpacked as such: its entries are indexed by name, and each blob is read from its offset and
//! checked against its digest (OCI) or its layer's diff ID (docker) as it is unpacked.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::{Image, ImageMeta, Limits, Store, StoreError, digest_of, is_digest};

/// Entries of an archive we look at, at most.
const MAX_ENTRIES: usize = 100_000;

/// What an archive holds, by normalised name.
enum Entry {
    File { offset: u64, size: u64 },
    Link(String),
}

struct Archive {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
}

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::Unsupported(msg.into())
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

/// `a/./b` → `a/b`; `..` is resolved lexically and may not climb out.
fn normal(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.join("/"))
}

impl Archive {
    fn index(path: &Path) -> Result<Self, StoreError> {
        let file = File::open(path).map_err(io_err(format!("cannot open {}", path.display())))?;
        let mut archive = tar::Archive::new(file);
        let mut entries = BTreeMap::new();
        for entry in archive.entries().map_err(io_err(format!("cannot read {}", path.display())))? {
            let entry = entry.map_err(io_err(format!("{} is not a tar archive", path.display())))?;
            if entries.len() >= MAX_ENTRIES {
                return Err(bad(format!("{} has more than {MAX_ENTRIES} entries", path.display())));
            }
            let name = entry.path().map_err(io_err("an entry's name".into()))?.into_owned();
            let Some(key) = normal(&name) else { continue };
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.header().size().unwrap_or(0);
                    entries.insert(key, Entry::File { offset: entry.raw_file_position(), size });
                }
                tar::EntryType::Symlink => {
                    // docker save links a layer seen twice to its first copy.
                    if let Ok(Some(target)) = entry.link_name() {
                        let dir = Path::new(&key).parent().unwrap_or(Path::new("")).to_owned();
                        if let Some(t) = normal(&dir.join(target)) {
                            entries.insert(key, Entry::Link(t));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Self { path: path.to_owned(), entries })
    }

    fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The file `name` (links followed), as a reader of exactly its bytes, and its size.
    fn open(&self, name: &str) -> Result<(io::Take<File>, u64), StoreError> {
        let mut name = name.to_owned();
        for _ in 0..8 {
            match self.entries.get(&name) {
                Some(Entry::File { offset, size }) => {
                    let mut f = File::open(&self.path)
                        .map_err(io_err(format!("cannot open {}", self.path.display())))?;
                    f.seek(SeekFrom::Start(*offset)).map_err(io_err(format!("cannot read {name}")))?;
                    return Ok((f.take(*size), *size));
                }
                Some(Entry::Link(t)) => name = t.clone(),
                None => break,
            }
        }
        Err(bad(format!("the archive has no file {name:?}")))
    }

    /// A small file (a manifest, an index, a config), at most `max` bytes.
    fn read(&self, name: &str, max: u64) -> Result<Vec<u8>, StoreError> {
        let (mut r, size) = self.open(name)?;
        if size > max {
            return Err(bad(format!("{name} has {size} bytes, more than the node's limit of {max}")));
        }
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(io_err(format!("cannot read {name}")))?;
        Ok(out)
    }

    /// The blob `digest` of an OCI layout, checked.
    fn blob(&self, digest: &str, max: u64) -> Result<Vec<u8>, StoreError> {
        let bytes = self.read(&blob_path(digest)?, max)?;
        check(digest, &digest_of(&bytes), &format!("blob {digest}"))?;
        Ok(bytes)
    }
}

fn blob_path(digest: &str) -> Result<String, StoreError> {
    if !is_digest(digest) {
        return Err(bad(format!("{digest:?} is not a sha256 digest")));
    }
    Ok(format!("blobs/sha256/{}", &digest[7..]))
}

fn check(expected: &str, actual: &str, what: &str) -> Result<(), StoreError> {
    if expected == actual {
        Ok(())
    } else {
        Err(StoreError::DigestMismatch {
            what: what.to_owned(),
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        })
    }
}

fn json(bytes: &[u8], what: &str) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("{what} is not JSON: {e}")))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// Imports every image of the archive `file` into `store`, also naming each `names` (tags).
pub fn import(
    store: &Store,
    file: &Path,
    names: &[String],
    limits: Limits,
) -> Result<Vec<Image>, StoreError> {
    let names: Vec<String> =
        names.iter().map(|n| crate::reference::normalize(n).map_err(bad)).collect::<Result<_, _>>()?;
    let archive = Archive::index(file)?;
    if archive.has("index.json") {
        import_oci(store, &archive, &names, limits)
    } else if archive.has("manifest.json") {
        import_docker(store, &archive, &names, limits)
    } else {
        Err(bad(format!(
            "{} is neither an OCI image layout (index.json) nor a docker save archive (manifest.json)",
            file.display()
        )))
    }
}

fn import_oci(
    store: &Store,
    a: &Archive,
    names: &[String],
    limits: Limits,
) -> Result<Vec<Image>, StoreError> {
    let index = json(&a.read("index.json", limits.max_document_bytes)?, "index.json")?;
    let mut images = Vec::new();
    for top in index["manifests"].as_array().into_iter().flatten() {
        let top_digest = top["digest"].as_str().unwrap_or_default().to_owned();
        let annotations = &top["annotations"];
        // A full reference (containerd's name, or a ref.name that is one) names the image; a
        // bare tag ("1") needs --name.
        let mut tags: Vec<String> =
            [&annotations["io.containerd.image.name"], &annotations["org.opencontainers.image.ref.name"]]
                .iter()
                .filter_map(|v| v.as_str())
                .filter(|n| n.contains('/') || n.contains(':'))
                .filter_map(|n| crate::reference::normalize(n).ok())
                .collect();
        tags.extend(names.iter().cloned());
        tags.dedup();
        let repo_digests: Vec<String> = tags
            .iter()
            .filter_map(|t| crate::reference::parse(t).ok())
            .map(|r| crate::reference::pinned(&r, &top_digest))
            .collect();
        let mut manifest = json(&a.blob(&top_digest, limits.max_document_bytes)?, "a manifest")?;
        if let Some(list) = manifest["manifests"].as_array() {
            let arch = match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            };
            let entry = list
                .iter()
                .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
                .ok_or_else(|| bad(format!("{top_digest}: no image for linux/{arch}")))?;
            let digest = entry["digest"].as_str().unwrap_or_default();
            manifest = json(&a.blob(digest, limits.max_document_bytes)?, "a manifest")?;
        }
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
        let config = a.blob(config_digest, limits.max_document_bytes)?;
        let layers: Vec<String> = manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["digest"].as_str().map(str::to_owned))
            .collect();
        let files =
            layers.iter().map(|d| blob_path(d).map(|p| (d.clone(), p))).collect::<Result<Vec<_>, _>>()?;
        images.push(store_image(
            store,
            a,
            &config,
            &files,
            ImageMeta { tags, repo_digests, ..ImageMeta::default() },
            limits,
        )?);
    }
    if images.is_empty() {
        return Err(bad("index.json lists no image"));
    }
    Ok(images)
}

fn import_docker(
    store: &Store,
    a: &Archive,
    names: &[String],
    limits: Limits,
) -> Result<Vec<Image>, StoreError> {
    let manifest = json(&a.read("manifest.json", limits.max_document_bytes)?, "manifest.json")?;
    let mut images = Vec::new();
    for m in manifest.as_array().into_iter().flatten() {
        let config = a.read(m["Config"].as_str().unwrap_or_default(), limits.max_document_bytes)?;
        let mut tags: Vec<String> =
            strings(&m["RepoTags"]).iter().filter_map(|t| crate::reference::normalize(t).ok()).collect();
        tags.extend(names.iter().cloned());
        tags.dedup();
        // No digests of their own: each layer is checked against the config's diff IDs.
        let files = strings(&m["Layers"]).into_iter().map(|p| (String::new(), p)).collect::<Vec<_>>();
        images.push(store_image(
            store,
            a,
            &config,
            &files,
            ImageMeta { tags, ..ImageMeta::default() },
            limits,
        )?);
    }
    if images.is_empty() {
        return Err(bad("manifest.json lists no image"));
    }
    Ok(images)
}

/// Unpacks `layers` ((digest or "", file in the archive)) checked against their digests and
/// the config's diff IDs, unless the store has the image already.
fn store_image(
    store: &Store,
    a: &Archive,
    config: &[u8],
    layers: &[(String, String)],
    meta: ImageMeta,
    limits: Limits,
) -> Result<Image, StoreError> {
    let id = digest_of(config);
    if store.find(&id).is_some() {
        return store.name(&id, &meta.tags, &meta.repo_digests);
    }
    let diff_ids = strings(&json(config, "the image config")?["rootfs"]["diff_ids"]);
    if diff_ids.len() != layers.len() {
        return Err(bad(format!(
            "the config lists {} layers, the manifest {}",
            diff_ids.len(),
            layers.len()
        )));
    }
    let mut builder = store.begin(limits)?;
    for (i, (digest, file)) in layers.iter().enumerate() {
        let (reader, _) = a.open(file)?;
        let mut hashing = HashingReader { inner: reader, hash: Sha256::new() };
        let diff_id = builder.apply_layer(&mut hashing)?;
        io::copy(&mut hashing, &mut io::sink()).map_err(io_err(format!("cannot read {file}")))?;
        if !digest.is_empty() {
            check(digest, &format!("sha256:{:x}", hashing.hash.finalize()), &format!("layer {digest}"))?;
        }
        check(&diff_ids[i], &diff_id, &format!("layer {i} (uncompressed) of {id}"))?;
    }
    builder.finish(config, meta)
}

struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_entry(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    /// A `docker save` archive of one image whose two layers are the same tar (the second a
    /// symlink to the first, as docker writes it), with `diff_id` as the config says.
    fn docker_save(diff_id: Option<&str>) -> Vec<u8> {
        let mut layer = tar::Builder::new(Vec::new());
        tar_entry(&mut layer, "hello", b"world");
        let layer = layer.into_inner().unwrap();
        let id = diff_id.map_or_else(|| digest_of(&layer), str::to_owned);
        let config = serde_json::to_vec(&serde_json::json!({
            "config": { "Cmd": ["/hello"] }, "rootfs": { "type": "layers", "diff_ids": [id, id] },
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": "cfg.json", "RepoTags": ["app:1"], "Layers": ["l1/layer.tar", "l2/layer.tar"],
        }]))
        .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        tar_entry(&mut b, "manifest.json", &manifest);
        tar_entry(&mut b, "cfg.json", &config);
        tar_entry(&mut b, "l1/layer.tar", &layer);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "l2/layer.tar", "../l1/layer.tar").unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_docker_save_archive_is_imported_with_its_tags_and_checked_against_its_diff_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(&dir.path().join("images"));
        let file = dir.path().join("saved.tar");
        std::fs::write(&file, docker_save(None)).unwrap();
        let [image] = import(&store, &file, &["registry.example/app:1".into()], Limits::default())
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(image.meta.tags, ["docker.io/library/app:1", "registry.example/app:1"]);
        assert_eq!(image.meta.cmd, ["/hello"]);
        assert_eq!(std::fs::read_to_string(image.rootfs().join("hello")).unwrap(), "world");
        assert_eq!(store.find("app:1").unwrap().meta.id, image.meta.id);

        let bad = format!("sha256:{}", "0".repeat(64));
        std::fs::write(&file, docker_save(Some(&bad))).unwrap();
        let err = import(&Store::new(&dir.path().join("other")), &file, &[], Limits::default()).unwrap_err();
        assert!(err.to_string().contains("digest mismatch for layer 0"), "{err}");
        // Neither an OCI layout nor docker's.
        std::fs::write(&file, tar::Builder::new(Vec::new()).into_inner().unwrap()).unwrap();
        let err = import(&store, &file, &[], Limits::default()).unwrap_err();
        assert!(err.to_string().contains("neither an OCI image layout"), "{err}");
    }
}
