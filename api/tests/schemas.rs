//! `schemas/` is generated from the Rust types, committed, and checked here; every example in
//! `manifests/` must satisfy both its schema and the typed validation.
//!
//! To regenerate after changing a type: `cargo test -p api --test schemas`. Outside CI a
//! stale file is rewritten and the test fails once, telling you to commit the new file
//! (rust-analyzer's `ensure_file_contents`); in CI (`CI` set) it only fails.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use api::kinds::KINDS;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The file name of a kind's schema.
fn schema_file(kind: &str) -> String {
    format!("{}.json", kind.to_lowercase())
}

fn schema_text(kind: &api::KindInfo) -> String {
    let mut text = serde_json::to_string_pretty(&(kind.schema)()).unwrap();
    text.push('\n');
    text
}

#[test]
fn schemas_are_fresh() {
    let dir = workspace().join("schemas");
    let mut stale = Vec::new();
    for kind in &KINDS {
        let path = dir.join(schema_file(kind.kind));
        let want = schema_text(kind);
        if fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            if std::env::var_os("CI").is_none() {
                fs::create_dir_all(&dir).unwrap();
                fs::write(&path, &want).unwrap();
            }
            stale.push(format!("schemas/{}", schema_file(kind.kind)));
        }
    }
    let expected: BTreeSet<String> = KINDS.iter().map(|k| schema_file(k.kind)).collect();
    let extra: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json") && !expected.contains(name))
        .collect();
    assert!(extra.is_empty(), "schemas/ has files for no kind: {extra:?}; delete them");
    assert!(stale.is_empty(), "stale schemas (rewritten now unless CI is set; commit them): {stale:?}");
}

#[test]
fn schemas_are_valid_json_schema() {
    for kind in &KINDS {
        let schema = serde_json::to_value((kind.schema)()).unwrap();
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{}: {e}", kind.kind));
    }
}

fn manifest_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            manifest_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(path);
        }
    }
}

#[test]
fn every_example_manifest_matches_its_schema_and_validates() {
    let mut files = Vec::new();
    manifest_files(&workspace().join("manifests"), &mut files);
    let mut kinds_seen = BTreeSet::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let docs = api::manifest::parse_documents(&text)
            .unwrap_or_else(|e| panic!("{}: {}", file.display(), e.located()));
        for (i, doc) in docs.iter().enumerate() {
            let at = format!("{} document {}", file.display(), i + 1);
            let kind = api::manifest::check(doc).unwrap_or_else(|errs| panic!("{at}: {errs:?}"));
            let schema = serde_json::to_value((kind.schema)()).unwrap();
            let validator = jsonschema::validator_for(&schema).unwrap();
            let errors: Vec<String> =
                validator.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{at}: {errors:?}");
            kinds_seen.insert(kind.kind);
        }
    }
    for kind in
        ["Workload", "TrustPolicy", "NodeOffer", "CreditGrant", "Attestation", "Transfer", "AgentGrant"]
    {
        assert!(kinds_seen.contains(kind), "manifests/ has no example of {kind}");
    }
}

#[test]
fn schema_and_typed_validation_agree_on_bad_input() {
    // A wrong type and an unknown field are refused by both layers.
    let bad = [
        serde_json::json!({"apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": {"name": "w"},
                           "spec": {"image": "x", "replicas": "three"}}),
        serde_json::json!({"apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": {"name": "w"},
                           "spec": {"image": "x", "replicaz": 1}}),
        serde_json::json!({"apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": {"name": "w"},
                           "spec": {"image": "x", "resources": {"cpu": "lots"}}}),
    ];
    let kind = api::kinds::by_kind("Workload").unwrap();
    let validator = jsonschema::validator_for(&serde_json::to_value((kind.schema)()).unwrap()).unwrap();
    for doc in &bad {
        assert!(!validator.is_valid(doc), "schema accepted {doc}");
        assert!(api::manifest::check(doc).is_err(), "typed check accepted {doc}");
    }
}

/// Every keyword of `node` and below, with the values of `$ref`.
fn keywords(node: &serde_json::Value, out: &mut BTreeSet<String>, refs: &mut BTreeSet<String>) {
    match node {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                out.insert(k.clone());
                if k == "$ref" {
                    refs.insert(v.as_str().unwrap_or_default().to_owned());
                }
                // Under `properties` (and `$defs`) the keys are names, not keywords.
                if k == "properties" || k == "$defs" {
                    for sub in v.as_object().into_iter().flat_map(|m| m.values()) {
                        keywords(sub, out, refs);
                    }
                } else {
                    keywords(v, out, refs);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| keywords(v, out, refs)),
        _ => {}
    }
}

#[test]
fn the_schemas_admit_no_key_the_unknown_field_walk_does_not_read() {
    // `manifest::is_valid` skips the unknown-field walk for an object its schema accepts: sound
    // only while no schema admits keys by a keyword the walk does not read, and every `$ref`
    // is one it resolves.
    let unread =
        ["patternProperties", "unevaluatedProperties", "dependentSchemas", "$dynamicRef", "propertyNames"];
    for kind in &KINDS {
        let schema = serde_json::to_value((kind.schema)()).unwrap();
        let (mut found, mut refs) = (BTreeSet::new(), BTreeSet::new());
        keywords(&schema, &mut found, &mut refs);
        for k in unread {
            assert!(
                !found.contains(k),
                "{}'s schema uses {k}, which the unknown-field walk does not read",
                kind.kind
            );
        }
        for r in &refs {
            assert!(
                r.starts_with("#/$defs/"),
                "{}'s schema has a $ref the walk does not resolve: {r}",
                kind.kind
            );
        }
    }
}

/// Every object of `doc` (by JSON pointer), the root included.
fn object_pointers(doc: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match doc {
        serde_json::Value::Object(map) => {
            out.push(at.clone());
            for (k, v) in map {
                object_pointers(v, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                object_pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_quick_validity_check_agrees_with_the_full_one_on_every_example_and_unknown_field() {
    // Every example, and every example with an unknown field added to one of its objects:
    // `is_valid` accepts exactly what `check` accepts (no unknown field gets past it).
    let mut files = Vec::new();
    manifest_files(&workspace().join("manifests"), &mut files);
    let (mut valid, mut refused) = (0, 0);
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        for doc in api::manifest::parse_documents(&text).unwrap() {
            let kind = api::manifest::kind_of(&doc).unwrap();
            assert!(api::manifest::is_valid(kind, &doc), "{}: {doc}", file.display());
            valid += 1;
            let mut pointers = Vec::new();
            object_pointers(&doc, String::new(), &mut pointers);
            for pointer in pointers {
                let mut changed = doc.clone();
                let object = changed.pointer_mut(&pointer).unwrap().as_object_mut().unwrap();
                object.insert("zzUnknownField".into(), serde_json::json!(1));
                let quick = api::manifest::is_valid(kind, &changed);
                let full = api::manifest::check(&changed);
                assert_eq!(
                    quick,
                    full.is_ok(),
                    "{} at {pointer:?}: is_valid {quick}, check {full:?}",
                    file.display()
                );
                let walk = api::unknown_fields::unknown_fields(api::schema::of(kind), &changed);
                if quick {
                    assert!(
                        walk.is_empty(),
                        "{} at {pointer:?}: valid, yet unknown {walk:?}",
                        file.display()
                    );
                } else {
                    refused += 1;
                }
            }
        }
    }
    assert!(valid >= 7 && refused >= 30, "{valid} examples, {refused} refused with an unknown field");
}
