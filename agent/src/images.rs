//! Images: root filesystems kept as directories on the node, found by name
//! (`IMAGES/NAME/`). A workload's `rootfs: busybox` (or `image: busybox`) runs on the directory
//! `IMAGES/busybox`. Pulling from an OCI registry is not done yet.
//!
//! `busybox` can be made from the host's statically linked busybox (Debian's `busybox-static`):
//! [`Images::ensure_busybox`] copies it into a fresh directory with a link per applet, then
//! renames it into place, so a container never sees a half-copied binary.

use std::path::{Path, PathBuf};

use api::kinds::ContainerSpec;

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
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok { Ok(()) } else { Err(format!("{name:?} is not an image name (letters, digits, '.', '-', '_')")) }
}

impl Images {
    /// The images under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    /// The root filesystem a container spec names.
    pub fn resolve(&self, c: &ContainerSpec) -> Result<PathBuf, String> {
        let (field, name) = match (&c.rootfs, &c.image) {
            (Some(r), _) => ("rootfs", r.as_str()),
            (None, Some(i)) => ("image", i.as_str()),
            (None, None) => return Err("the workload names no image or rootfs".to_owned()),
        };
        check_name(name)
            .map_err(|e| format!("{field}: {e}; pulling images from a registry is not supported yet"))?;
        let path = self.dir.join(name);
        if path.join("bin").is_dir() || path.join("usr").is_dir() {
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
    use super::*;

    #[test]
    fn names_cannot_leave_the_images_folder() {
        for bad in ["", ".", "..", "../etc", "/bin", "a/b", "büsy"] {
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
    fn dynamic_executables_are_not_static() {
        // The test binary itself links glibc dynamically.
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
    }
}
