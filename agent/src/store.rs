//! The node's store of OCI images: each image unpacked once into a read-only directory keyed
//! by its config digest (the image ID), shared by every replica that runs it.
//!
//! ```text
//! IMAGES/.oci/images/HEX/rootfs/      the unpacked layers (owned by host root)
//! IMAGES/.oci/images/HEX/image.json   names, digests, size, the image's entrypoint/cmd/env
//! IMAGES/.oci/images/HEX/used         its mtime: when a run last started on it
//! IMAGES/.oci/tmp/PID-NANOS/          an image being made (renamed into images/ when whole)
//! IMAGES/.oci/lock                    held while names are changed or images removed
//! ```
//!
//! An image is made in `tmp/` and renamed into place, so a crash never leaves half an image
//! under `images/`; what a dead process left in `tmp/` goes at the next garbage collection.
//!
//! Layers are hostile input. Every entry's path is checked: absolute paths and `..` are refused,
//! and so is writing through a symlink (each parent must be a real directory), a relative
//! symlink whose target climbs above the root and a hard link to anything but a regular file
//! in the image. Device nodes and FIFOs are skipped. setuid/setgid bits are dropped: files are
//! owned by host root (a replica's root is an unprivileged host uid that sees them as
//! `nobody`), the rootfs is shared on the host, and `noNewPrivileges` would ignore them anyway.
//! Modes are kept otherwise: a replica reads and runs a file as its "other" bits say. The total
//! size unpacked (files plus 512 bytes an entry) is bounded by the node's limit.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The store's folder under the node's images folder (a name `check_name` never allows).
pub const STORE_DIR: &str = ".oci";
/// What each entry of a layer costs besides its bytes (inodes are not free).
const ENTRY_COST: u64 = 512;
/// The directories a container's mounts go on: made in every image (its rootfs is read-only).
const MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "tmp", "etc", "root"];

/// Why an image could not be stored or found.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A layer entry would land outside the image.
    #[error("layer entry {path:?} {why}: refused")]
    Unsafe { path: String, why: &'static str },
    /// The image is bigger than the node allows.
    #[error("the image unpacks to more than the node's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// Content does not match its digest.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    /// A format this node does not read.
    #[error("{0}")]
    Unsupported(String),
    /// A run uses the image.
    #[error("image {0} is in use by a run on this node: stop the workload first")]
    InUse(String),
    /// No such image.
    #[error("no image {0:?} on this node (ui image ls lists them)")]
    NotFound(String),
    /// The file system.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// What the node allows an image to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes unpacked (files plus a fixed cost per entry), per image.
    pub max_unpacked_bytes: u64,
    /// Layers per image.
    pub max_layers: usize,
    /// Bytes of a manifest, an index or a config.
    pub max_document_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_unpacked_bytes: 4 << 30, max_layers: 128, max_document_bytes: 4 << 20 }
    }
}

/// What the store records of an image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageMeta {
    /// `sha256:HEX` of its config: the image ID.
    pub id: String,
    /// Normalised references by tag (`docker.io/library/busybox:1.36`); a tag names one image.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `REPOSITORY@sha256:HEX` of the manifest (or index) it was pulled or imported by.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Bytes unpacked.
    pub size: u64,
    /// When it was stored.
    pub stored_at: Option<DateTime<Utc>>,
    /// The image's own entrypoint, cmd, env and working directory (its config's `config`).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    /// The image's `User`: `UID`, `UID:GID`, `NAME` or `NAME:GROUP` (empty: root).
    #[serde(default)]
    pub user: String,
}

/// An image in the store.
#[derive(Clone, Debug)]
pub struct Image {
    /// Its directory (`images/HEX`).
    pub dir: PathBuf,
    /// What is recorded of it.
    pub meta: ImageMeta,
}

impl Image {
    /// The directory a container's root is made from.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// When a run last started on it (or when it was stored).
    pub fn last_used(&self) -> Option<SystemTime> {
        fs::metadata(self.dir.join("used")).and_then(|m| m.modified()).ok()
    }

    /// The reference a replica records (and restarts with): the repository digest when known,
    /// else the image ID.
    pub fn pinned(&self) -> String {
        self.meta.repo_digests.first().cloned().unwrap_or_else(|| self.meta.id.clone())
    }

    /// [`Image::pinned`] in the repository of `reference` when it has a digest there (the
    /// same image may come from several).
    pub fn pinned_for(&self, reference: &str) -> String {
        let repository =
            crate::reference::parse(reference).map(|r| format!("{}/{}@", r.registry(), r.repository()));
        repository
            .ok()
            .and_then(|repo| self.meta.repo_digests.iter().find(|d| d.starts_with(&repo)).cloned())
            .unwrap_or_else(|| self.pinned())
    }
}

/// The store under a node's images folder.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// Whether `s` is `sha256:` and 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// `sha256:HEX` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

impl Store {
    /// The store of the images folder `images`.
    pub fn new(images: &Path) -> Self {
        Self { root: images.join(STORE_DIR) }
    }

    fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    fn make_dirs(&self) -> Result<(), StoreError> {
        for dir in
            [self.root.parent().unwrap_or(&self.root), &self.root, &self.images(), &self.root.join("tmp")]
        {
            fs::create_dir_all(dir).map_err(io_err(format!("cannot make {}", dir.display())))?;
            // A replica's root (an unprivileged host uid) goes through these to its rootfs.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(io_err(format!("cannot set the mode of {}", dir.display())))?;
        }
        Ok(())
    }

    /// Holds the store's lock until dropped (names change, images go, under it).
    fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>, StoreError> {
        self.make_dirs()?;
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| StoreError::Io {
            context: format!("cannot lock {}", path.display()),
            source: e.into(),
        })
    }

    /// Every image in the store.
    pub fn list(&self) -> Vec<Image> {
        let Ok(dir) = fs::read_dir(self.images()) else { return Vec::new() };
        let mut images: Vec<Image> = dir
            .flatten()
            .filter_map(|e| {
                let meta = crate::run::read_json::<ImageMeta>(&e.path(), "image.json").ok()?;
                Some(Image { dir: e.path(), meta })
            })
            .collect();
        images.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
        images
    }

    /// The image `what` names: an image ID (`sha256:HEX`, or 12+ digits of it), or a reference
    /// by tag or digest as [`crate::reference::normalize`] spells it.
    pub fn find(&self, what: &str) -> Option<Image> {
        let images = self.list();
        if is_digest(what) {
            return images.into_iter().find(|i| i.meta.id == what);
        }
        if what.len() >= 12 && what.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut found = images.iter().filter(|i| i.meta.id[7..].starts_with(what));
            return match (found.next(), found.next()) {
                (Some(one), None) => Some(one.clone()),
                _ => None,
            };
        }
        let r = crate::reference::parse(what).ok()?;
        match r.digest() {
            Some(d) => {
                let pinned = format!("{}/{}@{d}", r.registry(), r.repository());
                images.into_iter().find(|i| i.meta.repo_digests.contains(&pinned))
            }
            None => images.into_iter().find(|i| i.meta.tags.contains(&r.whole())),
        }
    }

    /// Starts an image: layers go into a fresh directory under `tmp/`.
    pub fn begin(&self, limits: Limits) -> Result<Builder, StoreError> {
        self.make_dirs()?;
        let tmp = self.root.join("tmp").join(format!(
            "{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        let rootfs = tmp.join("rootfs");
        fs::create_dir_all(&rootfs).map_err(io_err(format!("cannot make {}", rootfs.display())))?;
        Ok(Builder { store: self.clone(), tmp, rootfs, used: 0, limits, layers: 0 })
    }

    /// Records `tags` and `repo_digests` on the image `id` (a tag moves from any other image).
    pub fn name(&self, id: &str, tags: &[String], repo_digests: &[String]) -> Result<Image, StoreError> {
        let _lock = self.lock()?;
        let mut found = None;
        for mut image in self.list() {
            let before = image.meta.clone();
            if image.meta.id == id {
                for t in tags {
                    if !image.meta.tags.contains(t) {
                        image.meta.tags.push(t.clone());
                    }
                }
                for d in repo_digests {
                    if !image.meta.repo_digests.contains(d) {
                        image.meta.repo_digests.push(d.clone());
                    }
                }
            } else {
                image.meta.tags.retain(|t| !tags.contains(t));
            }
            if image.meta != before {
                crate::run::write_json(&image.dir, "image.json", &image.meta)
                    .map_err(io_err(format!("cannot write {}/image.json", image.dir.display())))?;
            }
            if image.meta.id == id {
                found = Some(image);
            }
        }
        found.ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    /// Marks `image` used now (garbage collection keeps what was used recently).
    pub fn touch(&self, image: &Image) {
        let _ = fs::File::create(image.dir.join("used"));
    }

    /// The images a live run on the node whose runs are in `runs` uses, by directory.
    fn in_use(&self, runs: &Path) -> HashSet<PathBuf> {
        let Ok(dir) = fs::read_dir(runs) else { return HashSet::new() };
        dir.flatten()
            .filter(|e| crate::node::live_shim(&e.path()).is_some())
            .filter_map(|e| {
                crate::run::read_json::<crate::run::RunSpec>(&e.path(), crate::run::SPEC_FILE).ok()
            })
            .filter_map(|spec| spec.rootfs.parent().map(Path::to_owned))
            .collect()
    }

    /// Removes the image `what` names ([`Store::find`]), unless a live run of the node whose
    /// runs are in `runs` uses it.
    pub fn remove(&self, what: &str, runs: &Path) -> Result<Image, StoreError> {
        let _lock = self.lock()?;
        let image = self.find(what).ok_or_else(|| StoreError::NotFound(what.to_owned()))?;
        if self.in_use(runs).contains(&image.dir) {
            return Err(StoreError::InUse(image.meta.id.clone()));
        }
        self.delete(&image)?;
        Ok(image)
    }

    /// Renames an image out of `images/` (so it is gone at once), then deletes it.
    fn delete(&self, image: &Image) -> Result<(), StoreError> {
        let doomed = self.root.join("tmp").join(format!("rm-{}", &image.meta.id[7..]));
        let _ = fs::remove_dir_all(&doomed);
        fs::rename(&image.dir, &doomed).map_err(io_err(format!("cannot remove {}", image.dir.display())))?;
        fs::remove_dir_all(&doomed).map_err(io_err(format!("cannot remove {}", doomed.display())))
    }

    /// Garbage collection: removes every image no live run uses that was not used for `keep`,
    /// and what dead processes left in `tmp/`. Returns the IDs removed.
    pub fn gc(&self, runs: &Path, keep: Duration) -> Vec<String> {
        let Ok(_lock) = self.lock() else { return Vec::new() };
        if let Ok(dir) = fs::read_dir(self.root.join("tmp")) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let owner = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
                let alive = owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if !alive {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let in_use = self.in_use(runs);
        let now = SystemTime::now();
        let mut removed = Vec::new();
        for image in self.list() {
            let idle = image.last_used().and_then(|t| now.duration_since(t).ok()).unwrap_or(Duration::MAX);
            if in_use.contains(&image.dir) || idle < keep {
                continue;
            }
            match self.delete(&image) {
                Ok(()) => removed.push(image.meta.id),
                Err(e) => tracing::warn!(error = %e, "cannot remove an unused image"),
            }
        }
        removed
    }
}

/// An image being made: layers applied in order, then [`Builder::finish`].
#[derive(Debug)]
pub struct Builder {
    store: Store,
    tmp: PathBuf,
    rootfs: PathBuf,
    used: u64,
    limits: Limits,
    layers: usize,
}

impl Drop for Builder {
    fn drop(&mut self) {
        // Unfinished (refused, failed): nothing of it stays.
        let _ = fs::remove_dir_all(&self.tmp);
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

impl Builder {
    /// A file beside the image being made (a download), gone with it.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// Unpacks one layer (a tar, gzip'd or not) over the layers before it, applying its
    /// whiteouts; returns the sha256 of its uncompressed tar (its diff ID).
    pub fn apply_layer(&mut self, layer: impl Read) -> Result<String, StoreError> {
        self.layers += 1;
        if self.layers > self.limits.max_layers {
            return Err(StoreError::Unsupported(format!(
                "the image has more than {} layers, the node's limit",
                self.limits.max_layers
            )));
        }
        let mut layer = io::BufReader::new(layer);
        let head = io::BufRead::fill_buf(&mut layer).map_err(io_err("cannot read a layer"))?;
        let reader: Box<dyn Read> = match head {
            [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(layer)),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => {
                return Err(StoreError::Unsupported("zstd-compressed layers are not supported".into()));
            }
            _ => Box::new(layer),
        };
        let mut hashing = Hashing { inner: reader, hash: Sha256::new() };
        {
            let mut archive = tar::Archive::new(&mut hashing);
            let mut this_layer = HashSet::new();
            for entry in archive.entries().map_err(io_err("cannot read a layer"))? {
                let mut entry = entry.map_err(io_err("cannot read a layer entry"))?;
                self.entry(&mut entry, &mut this_layer)?;
            }
        }
        // The rest (the tar's end blocks, padding) counts in the diff ID.
        let rest = io::copy(&mut (&mut hashing).take(1 << 20), &mut io::sink())
            .map_err(io_err("cannot read a layer"))?;
        if rest >= 1 << 20 {
            return Err(StoreError::Unsupported("a layer has data after the end of its tar".into()));
        }
        Ok(format!("sha256:{:x}", hashing.hash.finalize()))
    }

    fn charge(&mut self, bytes: u64) -> Result<(), StoreError> {
        self.used = self.used.saturating_add(bytes).saturating_add(ENTRY_COST);
        if self.used > self.limits.max_unpacked_bytes {
            return Err(StoreError::TooLarge { limit: self.limits.max_unpacked_bytes });
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        this_layer: &mut HashSet<PathBuf>,
    ) -> Result<(), StoreError> {
        let raw = entry.path().map_err(io_err("a layer entry's path"))?.into_owned();
        let shown = raw.display().to_string();
        let unsafe_ = |why| StoreError::Unsafe { path: shown.clone(), why };
        let Some(rel) = clean(&raw).map_err(unsafe_)? else { return Ok(()) }; // the root itself
        let size = entry.header().size().unwrap_or(0);
        self.charge(size)?;
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_owned();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = real_dir(&self.rootfs, &parent_rel, false).map_err(unsafe_)?;
            let Some(parent) = parent else { return Ok(()) };
            if hidden == ".wh..opq" {
                // Opaque: what lower layers put in this directory is gone.
                if let Ok(dir) = fs::read_dir(&parent) {
                    for e in dir.flatten() {
                        if !this_layer.contains(&parent_rel.join(e.file_name())) {
                            remove_any(&e.path())?;
                        }
                    }
                }
            } else if !hidden.is_empty() && !hidden.contains('/') && hidden != "." && hidden != ".." {
                remove_any(&parent.join(hidden))?;
            }
            return Ok(());
        }
        let parent = real_dir(&self.rootfs, &parent_rel, true).map_err(unsafe_)?.expect("made");
        let path = parent.join(&name);
        // Only permission bits and the sticky bit: setuid/setgid are dropped (see the module).
        let mode = entry.header().mode().unwrap_or(0o644) & 0o1777;
        let kind = entry.header().entry_type();
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&path)?;
                        fs::create_dir(&path).map_err(io_err(format!("cannot make {shown}")))?;
                    }
                    Err(_) => fs::create_dir(&path).map_err(io_err(format!("cannot make {shown}")))?,
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(io_err(format!("cannot set the mode of {shown}")))?;
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                remove_any(&path)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err(format!("cannot write {shown}")))?;
                let copied = io::copy(&mut entry.take(size), &mut file)
                    .map_err(io_err(format!("cannot write {shown}")))?;
                if copied != size {
                    return Err(StoreError::Unsupported(format!("layer entry {shown} is truncated")));
                }
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err(format!("cannot set the mode of {shown}")))?;
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io_err(format!("the target of {shown}")))?
                    .ok_or_else(|| unsafe_("is a symlink without a target"))?
                    .into_owned();
                if climbs_out(&parent_rel, &target) {
                    return Err(unsafe_("is a symlink whose target climbs above the image's root"));
                }
                remove_any(&path)?;
                std::os::unix::fs::symlink(&target, &path).map_err(io_err(format!("cannot make {shown}")))?;
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(io_err(format!("the target of {shown}")))?
                    .ok_or_else(|| unsafe_("is a hard link without a target"))?
                    .into_owned();
                let target_rel =
                    clean(&target).map_err(unsafe_)?.ok_or_else(|| unsafe_("links to the root"))?;
                let target_parent =
                    real_dir(&self.rootfs, target_rel.parent().unwrap_or(Path::new("")), false)
                        .map_err(unsafe_)?
                        .ok_or_else(|| unsafe_("is a hard link to a file not in the image"))?;
                let source = target_parent.join(target_rel.file_name().expect("a cleaned path has a name"));
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.file_type().is_file() => {}
                    _ => return Err(unsafe_("is a hard link to something other than a file of the image")),
                }
                if source != path {
                    remove_any(&path)?;
                    fs::hard_link(&source, &path).map_err(io_err(format!("cannot make {shown}")))?;
                }
            }
            // Device nodes, FIFOs and the rest: not in a replica's image.
            _ => {
                tracing::debug!(path = %shown, ?kind, "skipping a layer entry of this type");
                return Ok(());
            }
        }
        this_layer.insert(rel);
        Ok(())
    }

    /// Makes the image whole: its mount points, `image.json`, then renamed into place (if
    /// another process stored the same image meanwhile, that one stays). `config` is the
    /// image's config blob, already checked against its digest.
    pub fn finish(self, config: &[u8], mut meta: ImageMeta) -> Result<Image, StoreError> {
        for dir in MOUNT_POINTS {
            let path = self.rootfs.join(dir);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_any(&path)?;
                    fs::create_dir(&path).map_err(io_err(format!("cannot make {dir}")))?;
                }
                Err(_) => fs::create_dir(&path).map_err(io_err(format!("cannot make {dir}")))?,
            }
        }
        // The files a replica's network mounts its own over: regular files (a symlink could
        // lead the mount elsewhere).
        for file in crate::network::MOUNTED_FILES {
            let path = self.rootfs.join(file);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => {}
                found => {
                    if found.is_ok() {
                        remove_any(&path)?;
                    }
                    fs::write(&path, b"").map_err(io_err(format!("cannot make {file}")))?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                        .map_err(io_err(format!("cannot set the mode of {file}")))?;
                }
            }
        }
        for dir in [&self.tmp, &self.rootfs] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(io_err(format!("cannot set the mode of {}", dir.display())))?;
        }
        let c: serde_json::Value = serde_json::from_slice(config)
            .map_err(|e| StoreError::Unsupported(format!("the image config is not JSON: {e}")))?;
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        meta.id = digest_of(config);
        meta.size = self.used;
        meta.stored_at = Some(Utc::now());
        meta.entrypoint = strings(&c["config"]["Entrypoint"]);
        meta.cmd = strings(&c["config"]["Cmd"]);
        meta.env = strings(&c["config"]["Env"]);
        meta.working_dir = c["config"]["WorkingDir"].as_str().unwrap_or_default().to_owned();
        meta.user = c["config"]["User"].as_str().unwrap_or_default().chars().take(256).collect();
        crate::run::write_json(&self.tmp, "image.json", &meta).map_err(io_err("cannot write image.json"))?;
        fs::write(self.tmp.join("config.json"), config).map_err(io_err("cannot write config.json"))?;
        fs::File::create(self.tmp.join("used")).map_err(io_err("cannot write used"))?;
        // Everything on disk before the rename makes it visible.
        if let Ok(d) = fs::File::open(&self.tmp) {
            let _ = nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d));
        }
        let target = self.store.images().join(&meta.id[7..]);
        let tags = std::mem::take(&mut meta.tags);
        let repo_digests = std::mem::take(&mut meta.repo_digests);
        if !target.exists() {
            fs::rename(&self.tmp, &target).map_err(io_err(format!("cannot store {}", target.display())))?;
        }
        self.store.name(&meta.id, &tags, &repo_digests)
    }
}

/// A layer path as its normal components: `Ok(None)` for the root itself, `Err` for an
/// absolute path or one with `..`.
fn clean(path: &Path) -> Result<Option<PathBuf>, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("has '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Whether a relative symlink in `dir` (relative to the root) to `target` climbs above the root.
fn climbs_out(dir: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        // Resolved inside the container's root; the agent never follows a link in an image.
        return false;
    }
    let mut depth = dir.components().count() as i64;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// `root/rel` when every component is a real directory (never a symlink). Missing ones are
/// made (0755) when `create`, else `Ok(None)`.
fn real_dir(root: &Path, rel: &Path, create: bool) -> Result<Option<PathBuf>, &'static str> {
    let mut path = root.to_owned();
    for c in rel.components() {
        path.push(c);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => return Err("goes through a symlink"),
            Ok(_) => return Err("goes through a file that is not a directory"),
            Err(_) if create => {
                fs::create_dir(&path).map_err(|_| "has a parent that cannot be made")?;
                let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o755));
            }
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(path))
}

/// Removes whatever is at `path` (a directory with its contents; a symlink, never its target).
fn remove_any(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
    .map_err(io_err(format!("cannot remove {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of `entries`: (path, kind, content or link target).
    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if *kind == tar::EntryType::Directory { 0o755 } else { 0o4755 });
            // Written raw: the builder's own checks would refuse the hostile paths under test.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_link_name(data).unwrap();
                    h.set_size(0);
                    h.set_cksum();
                    b.append(&h, io::empty()).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append(&h, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        (dir, store)
    }

    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as L};

    #[test]
    fn whiteouts_and_opaque_directories_hide_what_lower_layers_put_there() {
        let (_d, store) = store();
        let mut b = store.begin(Limits::default()).unwrap();
        let lower = tar_of(&[
            ("etc/", D, ""),
            ("etc/gone", F, "x"),
            ("etc/kept", F, "k"),
            ("var/", D, ""),
            ("var/cache/", D, ""),
            ("var/cache/old", F, "o"),
        ]);
        b.apply_layer(&lower[..]).unwrap();
        let upper = tar_of(&[
            ("etc/.wh.gone", F, ""),
            ("var/cache/", D, ""),
            ("var/cache/.wh..wh..opq", F, ""),
            ("var/cache/new", F, "n"),
        ]);
        // gzip'd this time.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &upper).unwrap();
        let diff_id = b.apply_layer(&gz.finish().unwrap()[..]).unwrap();
        assert_eq!(diff_id, digest_of(&upper), "the diff ID is the uncompressed tar's digest");
        let root = b.rootfs.clone();
        assert!(!root.join("etc/gone").exists());
        assert!(root.join("etc/kept").exists());
        assert!(!root.join("var/cache/old").exists());
        assert_eq!(fs::read_to_string(root.join("var/cache/new")).unwrap(), "n");
        // setuid dropped, the rest of the mode kept.
        assert_eq!(fs::metadata(root.join("etc/kept")).unwrap().permissions().mode() & 0o7777, 0o755);
        let image = b.finish(br#"{"config":{"Cmd":["sh"]}}"#, ImageMeta::default()).unwrap();
        assert_eq!(image.meta.cmd, ["sh"]);
        assert!(image.rootfs().join("proc").is_dir(), "mount points are made");
        assert_eq!(store.find(&image.meta.id).unwrap().dir, image.dir);
        assert!(store.list().len() == 1 && fs::read_dir(store.root.join("tmp")).unwrap().count() == 0);
    }

    #[test]
    fn layers_cannot_write_outside_the_image() {
        type Entries<'a> = &'a [(&'a str, tar::EntryType, &'a str)];
        let cases: &[(Entries<'_>, &str)] = &[
            (&[("../escape", F, "x")], "has '..'"),
            (&[("a/../../escape", F, "x")], "has '..'"),
            (&[("/etc/passwd", F, "x")], "is absolute"),
            // A symlink to the host, then a file written through it.
            (&[("out", L, "/"), ("out/etc/x", F, "x")], "goes through a symlink"),
            (&[("d/", D, ""), ("d/up", L, "../../..")], "climbs above"),
            (&[("h", H, "/etc/shadow")], "is absolute"),
            (&[("link", L, "/etc"), ("h", H, "link/shadow")], "goes through a symlink"),
            (&[("d/", D, ""), ("h", H, "d")], "other than a file"),
        ];
        for (entries, why) in cases {
            let (_d, store) = store();
            let mut b = store.begin(Limits::default()).unwrap();
            let err = b.apply_layer(&tar_of(entries)[..]).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("refused"), "{entries:?}: {err}");
        }
        // Allowed: absolute symlinks (resolved in the container) and links inside the image.
        let (_d, store) = store();
        let mut b = store.begin(Limits::default()).unwrap();
        let ok = tar_of(&[
            ("bin/", D, ""),
            ("bin/sh", L, "/bin/busybox"),
            ("bin/up", L, "../bin"),
            ("f", F, "1"),
            ("g", H, "f"),
        ]);
        b.apply_layer(&ok[..]).unwrap();
    }

    #[test]
    fn an_image_over_the_node_limit_is_refused_and_leaves_nothing() {
        let (_d, store) = store();
        let limits = Limits { max_unpacked_bytes: 4096, ..Limits::default() };
        let mut b = store.begin(limits).unwrap();
        let big = "x".repeat(5000);
        let err = b.apply_layer(&tar_of(&[("big", F, &big)])[..]).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { limit: 4096 }), "{err}");
        drop(b);
        assert_eq!(fs::read_dir(store.root.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn tags_move_between_images_and_unused_images_are_collected() {
        let (_d, store) = store();
        let make = |cmd: &str| {
            let b = store.begin(Limits::default()).unwrap();
            let meta = ImageMeta { tags: vec!["docker.io/library/web:1".into()], ..ImageMeta::default() };
            b.finish(format!(r#"{{"config":{{"Cmd":["{cmd}"]}}}}"#).as_bytes(), meta).unwrap()
        };
        let first = make("a");
        let second = make("b");
        assert_eq!(store.find("web:1").unwrap().meta.id, second.meta.id);
        assert!(store.find(&first.meta.id).unwrap().meta.tags.is_empty());
        let runs = tempfile::tempdir().unwrap();
        assert!(store.gc(runs.path(), Duration::from_secs(3600)).is_empty(), "recently used");
        let mut removed = store.gc(runs.path(), Duration::ZERO);
        removed.sort();
        let mut both = vec![first.meta.id, second.meta.id];
        both.sort();
        assert_eq!(removed, both);
        assert!(store.list().is_empty());
    }
}
