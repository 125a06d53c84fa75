//! Host id ranges for replicas' user namespaces, one per run on the machine, never shared.
//!
//! A run claims a slot (a range of [`oci::ID_RANGE`](crate::oci::ID_RANGE) host ids) by making
//! the file `/run/univrs/ids/SLOT` exclusively, naming the run and its run directory; the slot
//! its id hashes to first, then the next free one. A slot is the run's again across its
//! restarts, and free once its run directory is gone (the replica left the node), so agents
//! on one machine never hand out the same range and nothing needs releasing. `/run` is empty
//! after a reboot, as no container is left then.

use std::io::{ErrorKind, Write};
use std::path::Path;

use crate::oci::{FIRST_HOST_ID, ID_RANGE, ID_SLOTS, host_id_base};

/// Where slots are claimed.
pub const DIR: &str = "/run/univrs/ids";

/// The first host id of the range of run `id` (whose directory is `run_dir`), claimed in `dir`.
pub fn claim_in(dir: &Path, id: &str, run_dir: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    // One claimer at a time on the machine: a stale claim is never taken by two.
    let lock = std::fs::File::options().create(true).truncate(false).write(true).open(dir.join(".lock"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))?;
    let first = (host_id_base(id) - FIRST_HOST_ID) / ID_RANGE;
    let record = format!("{id}\n{}\n", run_dir.display());
    for i in 0..ID_SLOTS {
        let slot = (first + i) % ID_SLOTS;
        let path = dir.join(slot.to_string());
        // Twice: once more after a stale claim was removed.
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(record.as_bytes())?;
                    return Ok(FIRST_HOST_ID + slot * ID_RANGE);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let held = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut lines = held.lines();
                    let (holder, holder_dir) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
                    if holder == id && Path::new(holder_dir) == run_dir {
                        return Ok(FIRST_HOST_ID + slot * ID_RANGE);
                    }
                    // Half-written (its claimer is writing it now) or held by a live run: taken.
                    if holder_dir.is_empty() || Path::new(holder_dir).exists() {
                        break;
                    }
                    let _ = std::fs::remove_file(&path); // its run is gone
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(std::io::Error::other(format!("all {ID_SLOTS} user id ranges of this machine are in use")))
}

/// [`claim_in`] the machine's [`DIR`].
pub fn claim(id: &str, run_dir: &Path) -> std::io::Result<u64> {
    claim_in(Path::new(DIR), id, run_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_never_share_a_range_keep_theirs_and_free_it_when_they_go() {
        let tmp = tempfile::tempdir().unwrap();
        let ids = tmp.path().join("ids");
        let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a_dir).unwrap();
        std::fs::create_dir_all(&b_dir).unwrap();
        let a = claim_in(&ids, "run-a", &a_dir).unwrap();
        assert_eq!(a, host_id_base("run-a"), "its own slot first");
        assert_eq!(claim_in(&ids, "run-a", &a_dir).unwrap(), a, "the same across restarts");
        // Another run whose id hashes to the same slot (here: the same id on another node
        // directory) gets the next one.
        let b = claim_in(&ids, "run-a", &b_dir).unwrap();
        assert_eq!(b, a + ID_RANGE);
        // Once a's run directory is gone, its slot is free for whoever comes.
        std::fs::remove_dir_all(&a_dir).unwrap();
        let c_dir = tmp.path().join("c");
        std::fs::create_dir_all(&c_dir).unwrap();
        assert_eq!(claim_in(&ids, "run-a", &c_dir).unwrap(), a);
    }
}
