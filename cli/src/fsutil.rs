//! Writing files so that a crash or an error never leaves half a file, and private files are
//! never readable by others, not even for a moment.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;

/// Mode of private files.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of private directories.
pub const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` and missing parents with mode 0700. A directory that already exists keeps
/// its mode: it may be one the user chose and shares on purpose.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR).create(dir)
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, created
/// with `mode`, written and fsync'd, then renamed over `path`, then the directory fsync'd.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Fsyncs a directory so that renames inside it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads a file of at most `limit` bytes, saying which file and why when it cannot.
pub fn read_limited(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(buf.len() as u64 <= limit, "{}: larger than the limit of {limit} bytes", path.display());
    Ok(buf)
}
