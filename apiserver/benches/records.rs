//! What a write's log entry and history record cost to encode and decode, as JSON (how they
//! were stored before change 15 of BENCHMARKS.md) and as CBOR (how they are stored since),
//! for an object of 1.5 KiB shaped as the store bench's Replica: its JSON is a string inside
//! either record, which JSON escapes and CBOR holds as it is. Rounds alternate the two so that
//! the machine's speed moves both alike; prints the median of 15 rounds per case.
//!
//! `cargo bench -p apiserver --bench records`

use std::hint::black_box;
use std::time::Instant;

use apiserver::raft::history::{Change, Record};
use apiserver::raft::{Expect, Op, Request, Stored, TypeConfig};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

const OBJECT_BYTES: usize = 1536;
const ROUNDS: usize = 15;
const PER_ROUND: usize = 2_000;

/// A Replica of [`OBJECT_BYTES`], as the store bench writes them.
fn object(n: u64) -> String {
    let build = |pad: usize| {
        serde_json::json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
            "metadata": { "name": format!("r{n}"), "namespace": "default",
                "labels": { "app": "bench", "group": format!("g{}", n % 16) },
                "annotations": { "bench/pad": "x".repeat(pad), "bench/n": n.to_string() } },
            "spec": { "workload": "bench-workload", "container": { "rootfs": "busybox",
                "command": ["/bin/sh", "-c", "while true; do echo \"hello\" from the benchmark; sleep 1; done"] } } })
        .to_string()
    };
    build(OBJECT_BYTES.saturating_sub(build(0).len()))
}

fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), value).expect("encodes")
}

fn main() {
    let key = "/registry/univrs.io/replicas/default/r1".to_owned();
    let (before, after) = (object(1), object(2));
    let entry: Entry<TypeConfig> = Entry {
        log_id: LogId::new(CommittedLeaderId::new(3, 1), 42),
        payload: EntryPayload::Normal(Request::new(vec![Op::Put {
            key: key.clone(),
            value: after.clone().into(),
            expect: Expect::ModRevision(41),
        }])),
    };
    let record = Record {
        applied_at_ms: 1_764_000_000_000,
        changes: vec![Change::new(
            key,
            Some(Stored { create_revision: 7, mod_revision: 41, value: before }),
            Some(Stored { create_revision: 7, mod_revision: 42, value: after }),
        )],
    };
    let (entry_json, entry_cbor) = (serde_json::to_vec(&entry).unwrap(), cbor(&entry));
    let (record_json, record_cbor) = (serde_json::to_vec(&record).unwrap(), cbor(&record));
    // Each decodes back to what was encoded: the figures are of a faithful round trip.
    assert_eq!(serde_json::from_slice::<Entry<TypeConfig>>(&entry_json).unwrap(), entry);
    assert_eq!(cbor4ii::serde::from_slice::<Entry<TypeConfig>>(&entry_cbor).unwrap(), entry);
    assert_eq!(serde_json::from_slice::<Record>(&record_json).unwrap(), record);
    assert_eq!(cbor4ii::serde::from_slice::<Record>(&record_cbor).unwrap(), record);

    type Case<'a> = (&'a str, &'a str, Box<dyn Fn() -> usize + 'a>);
    let cases: Vec<Case<'_>> = vec![
        ("log entry: encode", "JSON", Box::new(|| serde_json::to_vec(black_box(&entry)).unwrap().len())),
        ("log entry: encode", "CBOR", Box::new(|| cbor(black_box(&entry)).len())),
        (
            "log entry: decode",
            "JSON",
            Box::new(|| {
                serde_json::from_slice::<Entry<TypeConfig>>(black_box(&entry_json)).unwrap().log_id.index
                    as usize
            }),
        ),
        (
            "log entry: decode",
            "CBOR",
            Box::new(|| {
                cbor4ii::serde::from_slice::<Entry<TypeConfig>>(black_box(&entry_cbor)).unwrap().log_id.index
                    as usize
            }),
        ),
        (
            "history record: encode",
            "JSON",
            Box::new(|| serde_json::to_vec(black_box(&record)).unwrap().len()),
        ),
        ("history record: encode", "CBOR", Box::new(|| cbor(black_box(&record)).len())),
        (
            "history record: decode",
            "JSON",
            Box::new(|| serde_json::from_slice::<Record>(black_box(&record_json)).unwrap().changes.len()),
        ),
        (
            "history record: decode",
            "CBOR",
            Box::new(|| cbor4ii::serde::from_slice::<Record>(black_box(&record_cbor)).unwrap().changes.len()),
        ),
    ];
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (i, (_, _, run)) in cases.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                black_box(run());
            }
            ns[i].push(start.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "A write's log entry and history record, object {} B: median of {ROUNDS} rounds of {PER_ROUND}",
        object(1).len()
    );
    println!();
    println!("| record | JSON | CBOR | CBOR ÷ JSON |");
    println!("|---|---|---|---|");
    let sizes = [(entry_json.len(), entry_cbor.len()), (record_json.len(), record_cbor.len())];
    for pair in 0..cases.len() / 2 {
        let (json, cbor) = (median(&mut ns[2 * pair].clone()), median(&mut ns[2 * pair + 1].clone()));
        println!(
            "| {} | {:.2} µs | {:.2} µs | ×{:.2} |",
            cases[2 * pair].0,
            json / 1e3,
            cbor / 1e3,
            cbor / json
        );
    }
    for (name, (json, cbor)) in ["log entry: bytes", "history record: bytes"].iter().zip(sizes) {
        println!("| {name} | {json} B | {cbor} B | ×{:.2} |", cbor as f64 / json as f64);
    }
}
