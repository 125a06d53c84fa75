//! Images: what a replica's root filesystem is made from.
//!
//! - `rootfs: NAME` is always a directory kept on the node, `IMAGES/NAME/`.
//! - `image: REF` is an OCI image, pulled from its registry ([`crate::registry`]) or imported
//!   (`ui image import`) into the node's store ([`crate::store`]). A bare name that is also a
//!   directory `IMAGES/NAME/` with a `bin` or `usr` in it is that directory (so `image: busybox`
//!   keeps running the busybox the agent makes): local directories win over Docker Hub.
//!
//! A tag is resolved to a digest at a replica's first pull and written in its status
//! (`imageID`); its restarts run that digest. A failed pull is retried with back-off
//! (10 s doubling to 5 min, as the kubelet), the replica `Pending` with the reason
//! `ErrImagePull`, then `ImagePullBackOff`, and a message naming what is wrong. Images no run
//! uses and none used for `Registries::keep_unused` are removed at agent start and every
//! ten minutes.
//!
//! `busybox` can be made from the host's statically linked busybox (Debian's `busybox-static`):
//! [`Images::ensure_busybox`] copies it into a fresh directory with a link per applet, then
//! renames it into place, so a container never sees a half-copied binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::kinds::{ContainerSpec, ReplicaSpec};
use client::resource::Kube;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::node::Config;
use crate::run::RuntimeKind;
use crate::store::{Image, Store};

/// Where Debian's `busybox-static` installs busybox.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// The directories a container's mounts go on, made in every image (its rootfs is read-only).
const MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "tmp", "etc", "root"];

/// The node's images.
#[derive(Clone, Debug)]
pub struct Images {
    dir: PathBuf,
}

/// An image name: a plain file name, so a workload can never point outside the images folder.
fn check_name(name: &str) -> Result<(), String> {
    // Not hidden: the store and images being made are `.oci`, `.tmp-*`.
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok { Ok(()) } else { Err(format!("{name:?} is not an image name (letters, digits, '.', '-', '_')")) }
}

/// Where a container's root comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A directory on the node.
    Directory(PathBuf),
    /// An OCI image, by reference.
    Oci(String),
}

/// The root filesystem of a run, and the image it came from (none for a directory).
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The directory the container's root is made from.
    pub rootfs: PathBuf,
    /// The OCI image, if it is one.
    pub image: Option<Image>,
}

impl Resolved {
    /// The command as Kubernetes makes it: `command` replaces the image's entrypoint, `args`
    /// its cmd.
    pub fn argv(&self, c: &ContainerSpec) -> Vec<String> {
        let Some(image) = &self.image else {
            return c.command.iter().chain(c.args.iter()).cloned().collect();
        };
        let entrypoint = if c.command.is_empty() { &image.meta.entrypoint } else { &c.command };
        let args = if c.args.is_empty() && c.command.is_empty() { &image.meta.cmd } else { &c.args };
        entrypoint.iter().chain(args.iter()).cloned().collect()
    }

    /// The image's working directory, where it is one in the image (else `/`).
    pub fn cwd(&self) -> String {
        let Some(image) = &self.image else { return "/".to_owned() };
        let wd = image.meta.working_dir.as_str();
        let inside =
            Path::new(wd).strip_prefix("/").ok().filter(|p| !p.components().any(|c| c.as_os_str() == ".."));
        match inside {
            Some(rel) if within_is_dir(&self.rootfs, rel) => wd.to_owned(),
            _ => "/".to_owned(),
        }
    }

    /// The uid and gid the image's `User` names (root without one), looked up in the image's
    /// own `/etc/passwd` and `/etc/group` for names; ids within the container's 65,536.
    pub fn user(&self) -> Result<(u32, u32), String> {
        let Some(image) = &self.image else { return Ok((0, 0)) };
        resolve_user(&image.meta.user, &self.rootfs)
    }

    /// The image's environment without what the workload sets (the workload's comes after).
    pub fn env(&self, c: &ContainerSpec) -> Vec<(String, String)> {
        let Some(image) = &self.image else { return Vec::new() };
        image
            .meta
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| !c.env.iter().any(|v| v.name == *k))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl Images {
    /// The images under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    /// The node's store of OCI images.
    pub fn store(&self) -> Store {
        Store::new(&self.dir)
    }

    /// Where the root filesystem of `c` comes from.
    pub fn source(&self, c: &ContainerSpec) -> Result<Source, String> {
        match (&c.rootfs, &c.image) {
            (None, Some(image)) if !(check_name(image).is_ok() && self.is_root_dir(image)) => {
                crate::reference::parse(image).map_err(|e| format!("image: {e}"))?;
                Ok(Source::Oci(image.clone()))
            }
            _ => self.resolve(c).map(Source::Directory),
        }
    }

    fn is_root_dir(&self, name: &str) -> bool {
        let path = self.dir.join(name);
        path.join("bin").is_dir() || path.join("usr").is_dir()
    }

    /// The root filesystem a container spec names.
    pub fn resolve(&self, c: &ContainerSpec) -> Result<PathBuf, String> {
        let (field, name) = match (&c.rootfs, &c.image) {
            (Some(r), _) => ("rootfs", r.as_str()),
            (None, Some(i)) => ("image", i.as_str()),
            (None, None) => return Err("the workload names no image or rootfs".to_owned()),
        };
        check_name(name).map_err(|e| format!("{field}: {e}"))?;
        let path = self.dir.join(name);
        if self.is_root_dir(name) {
            return Ok(path);
        }
        Err(format!(
            "{field} {name:?}: no image {name:?} on this node (looked for the directory {}); \
             put a root filesystem there{}",
            path.display(),
            if name == "busybox" { ", or install Debian's busybox-static and restart the agent" } else { "" }
        ))
    }

    /// Makes `IMAGES/busybox` from the host's static busybox if it is not there. `Ok(false)`
    /// when there is no static busybox on the host.
    pub fn ensure_busybox(&self) -> anyhow::Result<bool> {
        let target = self.dir.join("busybox");
        if target.join("bin/busybox").exists() {
            // Made by an earlier version as 0700: a container's unprivileged root enters it.
            std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
            // Made by an earlier version without the files a replica's network covers.
            for file in crate::network::MOUNTED_FILES {
                if !target.join(file).exists() {
                    std::fs::write(target.join(file), "")?;
                }
            }
            return Ok(true);
        }
        let host = Path::new(HOST_BUSYBOX);
        if !host.exists() || !is_static_elf(host)? {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.dir)?;
        let tmp = tempdir_in(&self.dir)?;
        let bin = tmp.join("bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::copy(host, bin.join("busybox"))?;
        std::fs::File::open(bin.join("busybox"))?.sync_all()?;
        let list = std::process::Command::new(bin.join("busybox")).arg("--list").output()?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if check_name(applet).is_ok() && applet != "busybox" {
                std::os::unix::fs::symlink("busybox", bin.join(applet))?;
            }
        }
        for dir in MOUNT_POINTS {
            std::fs::create_dir_all(tmp.join(dir))?;
        }
        std::fs::write(tmp.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
        std::fs::write(tmp.join("etc/group"), "root:x:0:\n")?;
        for file in crate::network::MOUNTED_FILES {
            std::fs::write(tmp.join(file), "")?;
        }
        match std::fs::rename(&tmp, &target) {
            Ok(()) => Ok(true),
            // Another agent on this machine made it first.
            Err(_) if target.join("bin/busybox").exists() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether `rel` is a directory in `root` reached through no symlink (the image is hostile:
/// its links must not lead the agent's look outside it).
fn within_is_dir(root: &Path, rel: &Path) -> bool {
    let mut at = root.to_owned();
    for c in rel.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// The text of `rel` (a regular file in `root`, through no symlink), at most 1 MiB of it.
fn read_within(root: &Path, rel: &str) -> Option<String> {
    let rel = Path::new(rel);
    if !within_is_dir(root, rel.parent()?) {
        return None;
    }
    let path = root.join(rel);
    let m = std::fs::symlink_metadata(&path).ok()?;
    if !m.is_file() || m.len() > 1 << 20 {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// Most ids a container has (its user namespace maps 65,536).
const MAX_CONTAINER_ID: u32 = 65_535;

/// `user` (an image's `User`) as uid and gid, names looked up in `rootfs`.
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = || read_within(rootfs, "etc/passwd").unwrap_or_default();
    // name:x:uid:gid:...
    let entry = |file: &str, name: &str| -> Option<(u32, Option<u32>)> {
        file.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == name)
                .then(|| Some((f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok()))))?
        })
    };
    let (uid, primary) = match u.parse::<u32>() {
        // A uid's primary group is that of its passwd line, if it has one (as docker does).
        Ok(uid) => (
            uid,
            passwd().lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4 && f[2].parse() == Ok(uid)).then(|| f[3].parse::<u32>().ok()).flatten()
            }),
        ),
        Err(_) => {
            entry(&passwd(), u).ok_or_else(|| format!("the image's user {u:?} is not in its /etc/passwd"))?
        }
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = read_within(rootfs, "etc/group").unwrap_or_default();
                entry(&group, g)
                    .map(|(gid, _)| gid)
                    .ok_or_else(|| format!("the image's group {g:?} is not in its /etc/group"))?
            }
        },
    };
    if uid > MAX_CONTAINER_ID || gid > MAX_CONTAINER_ID {
        return Err(format!(
            "the image's user {user:?} is outside the container's ids (0-{MAX_CONTAINER_ID})"
        ));
    }
    Ok((uid, gid))
}

/// The wait before pull number `n + 1` after `n` failed: 10 s doubling to 5 min (the kubelet's).
fn pull_delay(n: u32) -> Duration {
    Duration::from_secs(10u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(300))
}

/// What a run of a replica of `reference` pulls: the image it is pinned to (its `imageID`) when
/// that is an image ID or a digest of the same repository, else the reference itself.
fn to_pull(reference: &str, pinned: Option<&str>) -> String {
    // What the owner pinned by digest runs as written: no pin overrides it.
    if crate::reference::parse(reference).is_ok_and(|r| r.digest().is_some()) {
        return reference.to_owned();
    }
    let same_repository = |p: &str| {
        crate::store::is_digest(p)
            || crate::reference::parse(reference)
                .is_ok_and(|r| p.starts_with(&format!("{}/{}@", r.registry(), r.repository())))
    };
    pinned.filter(|p| same_repository(p)).map_or_else(|| reference.to_owned(), str::to_owned)
}

/// The root filesystem of the next run of `replica`: its directory, or its OCI image from the
/// store or pulled, retried with back-off (each failure reported through `report` as a status
/// patch). `pinned` is the image the replica is pinned to (its status' `imageID`): used when it
/// names the same repository, and set (and reported) at the first pull. `None` once `stop`.
pub async fn resolve_for_run<'r>(
    config: &Config,
    replica: &Kube<ReplicaSpec>,
    pinned: &mut Option<String>,
    stop: &CancellationToken,
    report: impl Fn(Value) -> futures_util::future::BoxFuture<'r, ()> + Send,
) -> Option<Result<Resolved, (&'static str, String)>> {
    if config.runtime == RuntimeKind::Process {
        return Some(Ok(Resolved { rootfs: PathBuf::from("/"), image: None }));
    }
    let images = Images::new(&config.images);
    let reference = match images.source(&replica.spec.container) {
        Ok(Source::Directory(rootfs)) => return Some(Ok(Resolved { rootfs, image: None })),
        Ok(Source::Oci(reference)) => reference,
        Err(e) => return Some(Err(("ImageNotFound", e))),
    };
    // Its own first pull's image, else the one the workload's replicas are pinned to.
    let want = to_pull(&reference, pinned.as_deref().or(replica.spec.pinned_image.as_deref()));
    let store = images.store();
    let mut failures = 0u32;
    loop {
        let started = std::time::Instant::now();
        match crate::registry::ensure(&store, &want, &config.registries).await {
            Ok(image) => {
                store.touch(&image);
                if pinned.as_deref() != Some(want.as_str()) {
                    let id = image.pinned_for(&reference);
                    tracing::info!(
                        "replica {}: image {reference} is {id} (ready in {:?})",
                        replica.metadata.name.as_deref().unwrap_or_default(),
                        started.elapsed()
                    );
                    *pinned = Some(id.clone());
                    report(json!({ "imageID": id })).await;
                }
                return Some(Ok(Resolved { rootfs: image.rootfs(), image: Some(image) }));
            }
            Err(e) => {
                failures += 1;
                let delay = pull_delay(failures);
                let reason = if failures == 1 { "ErrImagePull" } else { "ImagePullBackOff" };
                let message = format!("cannot pull image {want}: {e}; retrying in {} s", delay.as_secs());
                tracing::info!("replica {}: {message}", replica.metadata.name.as_deref().unwrap_or_default());
                report(json!({ "phase": "Pending", "reason": reason, "message": message })).await;
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Removes the node's unused images ([`Store::gc`]) at once, then every ten minutes, until
/// `shutdown`.
pub async fn collect_garbage(config: std::sync::Arc<Config>, shutdown: CancellationToken) {
    let store = Images::new(&config.images).store();
    let runs = config.state_dir.join("runs");
    loop {
        let (store, runs, keep) = (store.clone(), runs.clone(), config.registries.keep_unused);
        if let Ok(removed) = tokio::task::spawn_blocking(move || store.gc(&runs, keep)).await
            && !removed.is_empty()
        {
            tracing::info!("removed {} unused image(s): {}", removed.len(), removed.join(", "));
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    }
}

fn tempdir_in(dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    std::fs::create_dir(&path)?;
    // An image's root is entered by a container's (unprivileged) root.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(path)
}

/// Whether `path` is an ELF executable without a program interpreter (statically linked).
fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    let bytes = std::fs::read(path)?;
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let u64_at = |o: usize| bytes.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    // 64-bit little-endian ELF only (what this agent runs on).
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1]) {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return Ok(false);
    };
    const PT_INTERP: u32 = 3;
    let has_interp = (0..usize::from(phnum))
        .any(|i| u32_at(phoff as usize + i * usize::from(phentsize)) == Some(PT_INTERP));
    Ok(!has_interp)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_image_s_user_is_looked_up_in_the_image_and_never_through_a_link_out_of_it() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\nweb:x:101:102::/srv:/bin/sh\n")
            .unwrap();
        std::fs::write(etc.join("group"), "root:x:0:\nwww:x:33:\n").unwrap();
        let r = root.path();
        assert_eq!(resolve_user("", r), Ok((0, 0)));
        assert_eq!(resolve_user("web", r), Ok((101, 102)));
        assert_eq!(resolve_user("web:www", r), Ok((101, 33)));
        assert_eq!(resolve_user("1000", r), Ok((1000, 0)));
        assert_eq!(resolve_user("101", r), Ok((101, 102)), "a uid's group from its passwd line");
        assert_eq!(resolve_user("1000:1000", r), Ok((1000, 1000)));
        assert!(resolve_user("nobody", r).unwrap_err().contains("not in its /etc/passwd"));
        assert!(resolve_user("70000", r).unwrap_err().contains("outside the container's ids"));
        // /etc/passwd as a link to the host's: never read.
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", etc.join("passwd")).unwrap();
        assert!(resolve_user("root", r).is_err());
    }

    use super::*;

    #[test]
    fn names_cannot_leave_the_images_folder() {
        for bad in ["", ".", "..", "../etc", "/bin", "a/b", "büsy", ".oci", ".tmp-1"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["busybox", "debian-12.5", "my_app"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_missing_image_says_where_it_was_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let c = ContainerSpec { rootfs: Some("nothing".into()), ..ContainerSpec::default() };
        let err = Images::new(dir.path()).resolve(&c).unwrap_err();
        assert!(err.contains("no image \"nothing\""), "{err}");
        let c = ContainerSpec { rootfs: Some("../x".into()), ..ContainerSpec::default() };
        assert!(Images::new(dir.path()).resolve(&c).unwrap_err().contains("not an image name"));
    }

    #[test]
    fn a_bare_name_is_a_local_directory_when_there_is_one_else_a_reference() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("busybox/bin")).unwrap();
        let images = Images::new(dir.path());
        let image = |i: &str| ContainerSpec { image: Some(i.into()), ..ContainerSpec::default() };
        assert_eq!(images.source(&image("busybox")).unwrap(), Source::Directory(dir.path().join("busybox")));
        assert_eq!(images.source(&image("nginx")).unwrap(), Source::Oci("nginx".into()));
        assert_eq!(images.source(&image("busybox:1.36")).unwrap(), Source::Oci("busybox:1.36".into()));
        assert!(images.source(&image("Not A Ref")).unwrap_err().contains("not an image reference"));
        // rootfs: only ever a directory.
        let rootfs = ContainerSpec { rootfs: Some("nginx".into()), ..ContainerSpec::default() };
        assert!(images.source(&rootfs).unwrap_err().contains("no image \"nginx\""));
    }

    #[test]
    fn restarts_pull_the_digest_the_first_pull_resolved_the_tag_to() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(to_pull("web:1", None), "web:1");
        let pinned = format!("docker.io/library/web@{d}");
        assert_eq!(to_pull("web:1", Some(&pinned)), pinned);
        assert_eq!(
            to_pull("127.0.0.1:5000/web:1", Some(&format!("127.0.0.1:5000/web@{d}"))),
            format!("127.0.0.1:5000/web@{d}")
        );
        // An imported image known by its ID only.
        assert_eq!(to_pull("local/app:1", Some(&d)), d);
        // Pinned in another repository (not this reference's): the reference.
        assert_eq!(to_pull("web:1", Some(&format!("docker.io/library/db@{d}"))), "web:1");
        assert_eq!(to_pull("web:1", Some(&format!("docker.io/library/web-x@{d}"))), "web:1");
        // A reference by digest runs as written, whatever a pin says.
        let b = format!("sha256:{}", "b".repeat(64));
        assert_eq!(to_pull(&format!("web@{b}"), Some(&pinned)), format!("web@{b}"));
    }

    #[test]
    fn pulls_back_off_as_the_kubelet_does() {
        let delays: Vec<u64> = (1..=7).map(|n| pull_delay(n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn dynamic_executables_are_not_static() {
        // The test binary itself links glibc dynamically.
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
    }
}
