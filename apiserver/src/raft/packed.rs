//! Records stored compressed: the objects' JSON, and the log's entries and the history's
//! records, which hold objects' JSON again. LZ4 (a few µs to
//! pack a 1.5 KiB object, GB/s to read back) cuts them to a fraction on disk, and with them the
//! pages each commit writes.
//!
//! A packed record is [`LZ4`], the JSON's length (`u32`, little-endian) and its LZ4 block. A
//! record under [`WORTH_PACKING`] bytes or that would not shrink is stored as its JSON, which
//! never starts with that byte (bytes that do are always packed): records written before
//! packing existed read as they always did. A build from before packing cannot read what this
//! one wrote.
//!
//! Log entries and history records are written ([`encode`]) as [`CBOR`] and their CBOR, then
//! packed: their objects' JSON goes in as it is, where JSON would escape every quote of it
//! (the largest cost of writing either, BENCHMARKS.md change 15), and reads back without
//! unescaping. [`decode`] reads those and the JSON records written before. A build from before
//! cannot read them.

use std::borrow::Cow;

/// The first byte of a packed record (a JSON text starts with `{`, `[`, `"`, a digit, a
/// letter or whitespace, never a control byte).
const LZ4: u8 = 0x01;

/// The first byte of a record written as CBOR ([`encode`]): no JSON starts with it either.
const CBOR: u8 = 0x02;

/// Records shorter than this are stored as they are (LZ4 gains little on them).
const WORTH_PACKING: usize = 128;

/// The largest record [`unpack`] will expand to: anything claiming more is corrupt.
const MAX_UNPACKED: usize = 1 << 30;

/// `json` as stored: packed if that makes it shorter, as it is otherwise (what the tests
/// write records from before [`encode`] with).
#[cfg(test)]
pub fn pack(json: Vec<u8>) -> Vec<u8> {
    if !worth_packing(&json) && !starts_like_packed(&json) {
        return json;
    }
    let mut out = Vec::new();
    pack_into(&json, &mut out);
    out
}

/// Appends `json` as stored to `out`: packed if that makes it shorter, as it is otherwise.
pub fn pack_into(json: &[u8], out: &mut Vec<u8>) {
    // Bytes that start with the marker (no JSON does; a test's value might) are packed
    // whatever that gains, so that nothing stored as it is starts with it.
    let must = starts_like_packed(json);
    if must || worth_packing(json) {
        let start = out.len();
        out.resize(start + 5 + lz4_flex::block::get_maximum_output_size(json.len()), 0);
        out[start] = LZ4;
        out[start + 1..start + 5].copy_from_slice(&(json.len() as u32).to_le_bytes());
        match lz4_flex::block::compress_into(json, &mut out[start + 5..]) {
            Ok(n) if must || 5 + n < json.len() => {
                out.truncate(start + 5 + n);
                return;
            }
            _ => out.truncate(start),
        }
    }
    out.extend_from_slice(json);
}

fn starts_like_packed(json: &[u8]) -> bool {
    json.first() == Some(&LZ4)
}

fn worth_packing(json: &[u8]) -> bool {
    (WORTH_PACKING..=MAX_UNPACKED).contains(&json.len())
}

/// The bytes of a stored record (its JSON, or its CBOR behind [`CBOR`]), packed or not.
pub fn unpack(stored: &[u8]) -> std::io::Result<Cow<'_, [u8]>> {
    let Some((&LZ4, rest)) = stored.split_first() else { return Ok(Cow::Borrowed(stored)) };
    let corrupt =
        |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("packed record: {why}"));
    let (len, block) = rest.split_at_checked(4).ok_or_else(|| corrupt("cut short".into()))?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    // An LZ4 block expands at most ~255 times.
    if len > MAX_UNPACKED || len > block.len().saturating_mul(255) + 16 {
        return Err(corrupt(format!("claims {len} bytes")));
    }
    let mut out = vec![0; len];
    let n = lz4_flex::block::decompress_into(block, &mut out).map_err(|e| corrupt(e.to_string()))?;
    if n != len {
        return Err(corrupt(format!("{n} bytes where it claims {len}")));
    }
    Ok(Cow::Owned(out))
}

thread_local! {
    /// [`encode`]'s buffer, kept by each thread that writes records: it has long grown to a
    /// record's size (a new one would, from empty, be grown and copied nine or ten times for a
    /// record of one object, more for a log entry carrying a batch: 1.3–2.3 % of a member's
    /// CPU under load, BENCHMARKS.md's change 17).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `value` as stored: [`CBOR`] and its CBOR, packed.
pub fn encode<T: serde::Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends `value` as stored ([`encode`]) to `out`: a caller that keeps `out` from one batch
/// of records to the next allocates nothing for them.
pub fn encode_into<T: serde::Serialize>(value: &T, out: &mut Vec<u8>) -> std::io::Result<()> {
    // The CBOR is written into the thread's buffer, and packed into `out`, grown first to
    // the size packing may need.
    let mut cbor = SCRATCH.take();
    cbor.clear();
    cbor.push(CBOR);
    let mut cbor = cbor4ii::serde::to_vec(cbor, value).map_err(std::io::Error::other)?;
    out.reserve(packed_capacity(cbor.len()));
    pack_into(&cbor, out);
    // Kept, but at most this large between records.
    cbor.clear();
    cbor.shrink_to(SCRATCH_KEPT);
    SCRATCH.set(cbor);
    Ok(())
}

/// The most [`encode`]'s scratch buffer keeps between records: a log entry carries a batch of
/// writes (tens of objects under load), a history record the changes of one.
const SCRATCH_KEPT: usize = 1 << 20;

/// The bytes [`pack_into`] may need for a record of `len` bytes (room for its packed form's
/// worst case, which is more than the record as it is): what to reserve so that it never
/// grows the buffer.
pub fn packed_capacity(len: usize) -> usize {
    5 + lz4_flex::block::get_maximum_output_size(len)
}

/// The length of `stored` unpacked (without unpacking it; of a damaged record, a guess).
pub fn unpacked_len(stored: &[u8]) -> usize {
    match stored.split_first() {
        Some((&LZ4, rest)) if rest.len() >= 4 => {
            u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize
        }
        _ => stored.len(),
    }
}

/// A record as [`encode`] stores it, or JSON (packed or not) as records were written before.
pub fn decode<T: serde::de::DeserializeOwned>(stored: &[u8]) -> std::io::Result<T> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let bytes = unpack(stored)?;
    match bytes.split_first() {
        Some((&CBOR, cbor)) => cbor4ii::serde::from_slice(cbor).map_err(|e| invalid(e.to_string())),
        _ => serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string())),
    }
}

/// Every key and value in a member's database file (`state.redb`, or `raft-log.redb` from
/// before the WAL; none in the tombstone left there since), or every record of a segment of its Raft log (`raft-log/*.wal`), values
/// unpacked, for a test that must show a string is nowhere on disk: packed records need not
/// hold it in one piece. Open only while no member has the file open.
pub fn stored_records(path: &std::path::Path) -> std::io::Result<Vec<Vec<u8>>> {
    if path.extension().is_some_and(|e| e == "wal") {
        return super::wal::stored_records(path);
    }
    if super::log_store::is_tombstone(path)? {
        return Ok(Vec::new());
    }
    use super::log_store::LOG;
    use super::read_table;
    use super::state_machine::{HISTORY, META, OBJECTS};
    use redb::{ReadableDatabase, ReadableTable, TableHandle};
    let io = |e: redb::Error| std::io::Error::other(e.to_string());
    let db = super::open_redb(&redb::Database::builder(), path, false).map_err(|e| io(e.into()))?;
    let txn = db.begin_read().map_err(|e| io(e.into()))?;
    let mut out = Vec::new();
    // Keyed by name (the log's meta table is the state machine's `meta` too): an object's
    // value starts with its two revisions of 8 bytes, then the packed JSON.
    for table in [OBJECTS, META] {
        let Some(records) = read_table(&txn, table).map_err(|e| io(e.into()))? else { continue };
        for item in records.iter().map_err(|e| io(e.into()))? {
            let (k, v) = item.map_err(|e| io(e.into()))?;
            out.push(k.value().as_bytes().to_vec());
            let v = v.value();
            out.push(match (table.name(), v.split_at_checked(16)) {
                ("objects", Some((revisions, value))) => [revisions, unpack(value)?.as_ref()].concat(),
                _ => v.to_vec(),
            });
        }
    }
    // Keyed by number: history records and log entries, packed whole.
    for table in [HISTORY, LOG] {
        let Some(records) = read_table(&txn, table).map_err(|e| io(e.into()))? else { continue };
        for item in records.iter().map_err(|e| io(e.into()))? {
            out.push(unpack(item.map_err(|e| io(e.into()))?.1.value())?.into_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written_packed_or_not() {
        let object = serde_json::json!({
            "apiVersion": "univrs.io/v1", "kind": "Replica",
            "metadata": {"name": "r-1", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
            "spec": {"image": "registry.example/web:1", "args": ["--port", "8080"], "resources": {"cpu": "500m"}},
        });
        let entry =
            serde_json::to_vec(&serde_json::json!({"value": object.to_string(), "also": object})).unwrap();
        for json in [
            entry.clone(),
            b"{}".to_vec(),
            b"[1,2,3]".to_vec(),
            vec![b' '; 4096],
            Vec::new(),
            vec![LZ4],
            vec![LZ4, b'x', 0, 0, 0],
        ] {
            let stored = pack(json.clone());
            if json.first() != Some(&LZ4) {
                assert!(stored.len() <= json.len(), "never longer than the JSON");
            }
            let mut appended = b"before".to_vec();
            pack_into(&json, &mut appended);
            assert_eq!(&appended[6..], stored.as_slice(), "pack_into appends what pack makes");
            assert_eq!(unpack(&stored).unwrap().as_ref(), json.as_slice());
        }
        assert_eq!(pack(entry.clone())[0], LZ4, "a record of objects' JSON shrinks");
        // Records written before packing read as they are.
        assert_eq!(unpack(&entry).unwrap().as_ref(), entry.as_slice());
    }

    #[test]
    fn a_record_encoded_reads_back_and_so_do_json_records_from_before() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Rec {
            at: u64,
            values: Vec<Option<String>>,
            keyed: std::collections::BTreeMap<u64, String>,
        }
        let object =
            serde_json::json!({"metadata": {"name": "r-1", "labels": {"a": "b\"c"}}, "spec": {"x": [1, 2]}});
        for n in [0, 1, 40] {
            let rec = Rec {
                at: 1 << 40,
                values: (0..n).map(|i| (i % 3 != 0).then(|| object.to_string())).collect(),
                keyed: (0..n as u64).map(|i| (i, format!("{i}"))).collect(),
            };
            let stored = encode(&rec).unwrap();
            assert_eq!(decode::<Rec>(&stored).unwrap(), rec);
            assert_eq!(unpacked_len(&stored), unpack(&stored).unwrap().len());
            let json = serde_json::to_vec(&serde_json::json!({
                "at": rec.at, "values": rec.values,
                "keyed": rec.keyed.iter().map(|(k, v)| (k.to_string(), v.clone().into())).collect::<serde_json::Map<_, _>>(),
            }))
            .unwrap();
            assert_eq!(decode::<Rec>(&json).unwrap(), rec, "plain JSON from before");
            assert_eq!(decode::<Rec>(&pack(json)).unwrap(), rec, "packed JSON from before");
            if n == 40 {
                assert_eq!(stored[0], LZ4, "a large record is packed");
                let unescaped = object.to_string();
                assert!(
                    unpack(&stored).unwrap().windows(unescaped.len()).any(|w| w == unescaped.as_bytes()),
                    "the objects' JSON is in the record as it is"
                );
            }
        }
        assert!(decode::<Rec>(&[CBOR, 0xff, 0x00]).is_err(), "damaged CBOR is an error");
        assert!(decode::<Rec>(b"{").is_err());
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic_or_a_huge_allocation() {
        let stored = pack(vec![b'a'; 10_000]);
        assert_eq!(stored[0], LZ4);
        for cut in [1, 3, 5, 8, stored.len() - 1] {
            assert!(unpack(&stored[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = stored.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unpack(&huge).is_err());
        let mut longer = stored.clone();
        longer[1..5].copy_from_slice(&11_000u32.to_le_bytes());
        assert!(unpack(&longer).is_err(), "a length that does not match the block");
        let mut garbled = stored;
        for b in garbled.iter_mut().skip(5) {
            *b = 0xff;
        }
        assert!(unpack(&garbled).is_err());
    }

    /// A value that does not shrink when packed: `n` bytes of it are `n` bytes stored.
    pub(crate) fn incompressible(n: usize, seed: u64) -> String {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect()
    }

    #[test]
    fn records_encoded_one_after_another_each_read_back_whatever_came_before() {
        // The thread's buffer: a large record (over what it keeps), then small and
        // incompressible ones, each alone in what it returns; and what it keeps is bounded.
        let large = "x".repeat(SCRATCH_KEPT + 10);
        let noise = incompressible(3000, 0x9e37_79b9_7f4a_7c15);
        for text in [large.as_str(), "small", noise.as_str(), "", large.as_str(), "small again"] {
            let stored = encode(&text).unwrap();
            assert_eq!(decode::<String>(&stored).unwrap(), text);
            assert!(
                SCRATCH.with_borrow(Vec::capacity) <= SCRATCH_KEPT,
                "kept bounded after {} bytes",
                text.len()
            );
            if text.len() == noise.len() {
                assert_ne!(stored[0], LZ4, "what packing would not shrink is stored as it is");
            }
        }
    }
}
