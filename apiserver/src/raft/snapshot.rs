//! Snapshots as files beside the state machine's database, written and read one object at a
//! time, so that neither building, sending nor installing one ever holds the whole state in
//! memory (100,000 objects of 1.5 KiB are 150 MiB of JSON).
//!
//! A file is JSON lines: first a [`Header`] (the snapshot's meta and the revision of its
//! state), then one `[key, create revision, mod revision, value]` array per object, in key
//! order, then a trailer with the number of objects. Members of one cluster run one version:
//! a member from before these files cannot read one. Members before these files sent one JSON document (`{"last_applied": …,
//! "revision": …, "membership": …, "objects": [[key, stored], …]}`) on one line: [`read`]
//! still takes it, holding it whole as it always did.
//!
//! A file is written under a temporary name, fsync'd, then renamed over the current one (and
//! the directory fsync'd), so the current file is always a whole snapshot.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use openraft::{LogId, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};

use super::{Member, NodeId, Stored};

/// The first line of a snapshot file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    /// The format's version (1); also what tells a file from the older single document.
    pub univrs_snapshot: u32,
    /// openraft's meta of the snapshot: the last log id and membership it includes, its id.
    pub meta: SnapshotMeta<NodeId, Member>,
    /// The revision of the state it holds.
    pub revision: u64,
}

/// The last line of a snapshot file: how many objects it holds (a file cut short, even at a
/// line's end, is refused rather than installed as a smaller state).
#[derive(Serialize, Deserialize)]
struct Trailer {
    univrs_snapshot_end: u64,
}

/// The single document older members sent.
#[derive(Deserialize)]
struct OlderSnapshot {
    #[allow(dead_code)]
    last_applied: Option<LogId<NodeId>>,
    #[serde(default)]
    revision: Option<u64>,
    #[allow(dead_code)]
    membership: StoredMembership<NodeId, Member>,
    objects: Vec<(String, Stored)>,
}

/// A snapshot file being written.
pub struct Writer {
    file: BufWriter<File>,
    tmp: PathBuf,
    /// Objects written so far (the trailer's count).
    count: u64,
}

impl Writer {
    /// Starts a file at `tmp` with `header`.
    pub fn create(tmp: PathBuf, header: &Header) -> io::Result<Self> {
        let mut file = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        serde_json::to_writer(&mut file, header)?;
        file.write_all(b"\n")?;
        Ok(Self { file, tmp, count: 0 })
    }

    /// Adds one object (in key order).
    pub fn object(&mut self, key: &str, stored: &Stored) -> io::Result<()> {
        serde_json::to_writer(
            &mut self.file,
            &(key, stored.create_revision, stored.mod_revision, &stored.value),
        )?;
        self.count += 1;
        self.file.write_all(b"\n")
    }

    /// Ends the file with the count of its objects, makes it durable and puts it at `to`,
    /// replacing what was there; returns it open for reading from its start (this file,
    /// whatever replaces it at `to` later).
    pub fn finish(mut self, to: &Path) -> io::Result<File> {
        serde_json::to_writer(&mut self.file, &Trailer { univrs_snapshot_end: self.count })?;
        self.file.write_all(b"\n")?;
        let file = self.file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);
        let written = File::open(&self.tmp)?;
        std::fs::rename(&self.tmp, to)?;
        if let Some(dir) = to.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(written)
    }
}

/// The objects of snapshot data, in order.
pub enum Objects<R> {
    /// A file's lines, and how many have been read.
    Lines(R, u64),
    /// An older member's document, read whole.
    Older(std::vec::IntoIter<(String, Stored)>),
}

impl<R: BufRead> Iterator for Objects<R> {
    type Item = io::Result<(String, Stored)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (data, read) = match self {
            Objects::Older(objects) => return objects.next().map(Ok),
            Objects::Lines(data, read) => (data, read),
        };
        let mut line = String::new();
        match data.read_line(&mut line) {
            Ok(0) => Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the snapshot ends before its last line",
            ))),
            Ok(_) if line.starts_with('{') => match serde_json::from_str::<Trailer>(&line) {
                Ok(end) if end.univrs_snapshot_end == *read => None,
                Ok(end) => Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the snapshot says it holds {} objects, it holds {read}",
                        end.univrs_snapshot_end
                    ),
                ))),
                Err(e) => Some(Err(e.into())),
            },
            Ok(_) => {
                *read += 1;
                Some(
                    serde_json::from_str::<(String, u64, u64, String)>(&line)
                        .map(|(key, create_revision, mod_revision, value)| {
                            (key, Stored { create_revision, mod_revision, value })
                        })
                        .map_err(io::Error::from),
                )
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// Opens snapshot data: the revision of its state (`None`: an older snapshot that has none)
/// and its objects.
pub fn read<R: BufRead>(mut data: R) -> io::Result<(Option<u64>, Objects<R>)> {
    let mut line = String::new();
    data.read_line(&mut line)?;
    if let Ok(header) = serde_json::from_str::<Header>(&line) {
        return Ok((Some(header.revision), Objects::Lines(data, 0)));
    }
    let older: OlderSnapshot = serde_json::from_str(&line)?;
    Ok((older.revision, Objects::Older(older.objects.into_iter())))
}

/// The snapshot file at `path`, open at its start, and its header (`None`: there is none).
pub fn open(path: &Path) -> io::Result<Option<(Header, File)>> {
    use std::io::Seek as _;
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut line = String::new();
    io::BufReader::new(&file).read_line(&mut line)?;
    file.rewind()?;
    Ok(Some((serde_json::from_str(&line)?, file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(rev: u64, v: &str) -> Stored {
        Stored { create_revision: rev, mod_revision: rev + 1, value: v.into() }
    }

    fn read_all(bytes: &[u8]) -> (Option<u64>, Vec<(String, Stored)>) {
        let (revision, objects) = read(bytes).unwrap();
        (revision, objects.collect::<io::Result<_>>().unwrap())
    }

    #[test]
    fn a_file_holds_its_header_and_every_object_and_the_older_document_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let header = Header { univrs_snapshot: 1, meta: SnapshotMeta::default(), revision: 42 };
        let objects = vec![
            ("/a".to_owned(), stored(1, "{\"x\":\"line\\nbreak\"}")),
            ("/b".to_owned(), stored(2, "{}")),
        ];
        let mut w = Writer::create(dir.path().join("s.tmp"), &header).unwrap();
        for (k, s) in &objects {
            w.object(k, s).unwrap();
        }
        let path = dir.path().join("s");
        w.finish(&path).unwrap();
        assert!(!dir.path().join("s.tmp").exists());
        assert_eq!(open(&path).unwrap().unwrap().0.revision, 42);
        assert!(open(&dir.path().join("none")).unwrap().is_none());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 4, "one line each, and the trailer");
        assert_eq!(read_all(&bytes), (Some(42), objects.clone()));

        let older = serde_json::json!({
            "last_applied": null, "membership": StoredMembership::<NodeId, Member>::default(),
            "objects": objects,
        });
        assert_eq!(read_all(older.to_string().as_bytes()), (None, objects));
        assert!(read(&b"garbage\n"[..]).is_err());
        let (_, mut cut) = read(&b"{\"univrs_snapshot\":1,\"meta\":{\"last_log_id\":null,\"last_membership\":{\"log_id\":null,\"membership\":{\"configs\":[],\"nodes\":{}}},\"snapshot_id\":\"\"},\"revision\":1}\n[\"/a\",1"[..]).unwrap();
        assert!(cut.next().unwrap().is_err(), "a cut line is an error, not the end");
        // Cut at a line's end, or with a wrong count: refused, not a smaller state.
        let text = String::from_utf8(bytes).unwrap();
        let without_trailer: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        let (_, objects) = read(without_trailer.as_bytes()).unwrap();
        assert!(objects.collect::<io::Result<Vec<_>>>().is_err());
        let wrong = text.replace("\"univrs_snapshot_end\":2", "\"univrs_snapshot_end\":3");
        let (_, objects) = read(wrong.as_bytes()).unwrap();
        assert!(objects.collect::<io::Result<Vec<_>>>().is_err());
    }
}
