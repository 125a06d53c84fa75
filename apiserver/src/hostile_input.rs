//! Every parser of the apiserver a stranger reaches, fed arbitrary and hostile input: request
//! bodies (strict JSON), JSON patches, merge patches, server-side apply configurations and
//! continue tokens. Never a panic; never a document past the bounds of [`crate::patch`].
//!
//! CI runs a short budget; run a longer one on demand with
//! `PROPTEST_CASES=100000 cargo test -p apiserver --lib --release hostile_input`.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::patch::{self, MAX_DEPTH, MAX_DOCUMENT_BYTES, measure};

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map("[a-z/~0-9-]{0,5}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON pointers into small documents, including the whole document, `-`, escapes and junk.
fn pointer() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        proptest::collection::vec(
            prop_oneof!["[a-c]", "[0-3]", Just("-".to_owned()), Just("~1".to_owned())],
            1..5
        )
        .prop_map(|t| format!("/{}", t.join("/"))),
        ".{0,10}",
    ]
}

fn operation() -> impl Strategy<Value = Value> {
    let op = proptest::sample::select(vec!["add", "remove", "replace", "move", "copy", "test", "bogus"]);
    (op, pointer(), pointer(), json_value(), any::<bool>()).prop_map(|(op, path, from, value, full)| {
        if full {
            json!({ "op": op, "path": path, "from": from, "value": value })
        } else {
            json!({ "op": op, "path": path })
        }
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn strict_json_bodies_never_panic(text in prop_oneof![".{0,300}", "[\\[\\]{}\":,0-9a ]{0,300}"]) {
        let _ = crate::http::json::parse(&text);
    }

    #[test]
    fn json_patches_stay_within_their_bounds(
        doc in json_value(),
        ops in proptest::collection::vec(operation(), 0..40),
        copies in 0usize..30,
    ) {
        // Arbitrary operations, then a run of whole-document copies (the doubling attack).
        let mut all = ops;
        all.extend((0..copies).map(|i| json!({ "op": "copy", "from": "", "path": format!("/c{i}") })));
        let mut target = json!({ "a": doc });
        let before = target.clone();
        match patch::json_patch(&mut target, &Value::Array(all)) {
            Ok(()) => {
                let (bytes, depth) = measure(&target);
                prop_assert!(bytes <= MAX_DOCUMENT_BYTES + measure(&before).0, "{bytes} bytes");
                prop_assert!(depth <= MAX_DEPTH.max(measure(&before).1), "depth {depth}");
            }
            // All or nothing.
            Err(_) => prop_assert_eq!(target, before),
        }
    }

    #[test]
    fn merge_patches_and_apply_never_panic(
        live in json_value(),
        change in json_value(),
        previous in json_value(),
    ) {
        let mut merged = live.clone();
        patch::merge_patch(&mut merged, &change);
        prop_assert!(measure(&merged).1 <= measure(&live).1.max(measure(&change).1) + 1);
        let mut applied = live.clone();
        patch::apply(&mut applied, &change, Some(&patch::fields_of(&previous)));
        let _ = patch::fields_of(&applied);
    }

    #[test]
    fn continue_tokens_never_panic(text in prop_oneof![".{0,200}", "[A-Za-z0-9_-]{0,200}"]) {
        let _ = crate::registry::paging::decode_continue(&text);
    }
}

#[test]
fn hostile_bodies_and_patches_are_refused() {
    // Nesting far past serde_json's limit: an error, not a stack overflow.
    assert!(
        crate::http::json::parse(&format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000))).is_err()
    );
    assert!(crate::http::json::parse(&format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200))).is_err());
    // A patch that nests a value deeper and deeper, one that copies the whole document into
    // itself forty times, and ten thousand and one operations.
    let mut doc = json!({ "spec": { "a": 1 } });
    let deepen: Vec<Value> =
        (0..200).map(|i| json!({ "op": "copy", "from": "/spec", "path": format!("/spec/d{i}") })).collect();
    assert!(matches!(
        patch::json_patch(&mut doc, &Value::Array(deepen)),
        Err(patch::PatchError::TooLarge(_))
    ));
    let double: Vec<Value> =
        (0..40).map(|i| json!({ "op": "copy", "from": "", "path": format!("/x{i}") })).collect();
    assert!(matches!(
        patch::json_patch(&mut doc, &Value::Array(double)),
        Err(patch::PatchError::TooLarge(_))
    ));
    let many = vec![json!({ "op": "test", "path": "/spec/a", "value": 1 }); patch::MAX_JSON_PATCH_OPS + 1];
    assert!(matches!(patch::json_patch(&mut doc, &Value::Array(many)), Err(patch::PatchError::TooLarge(_))));
    let into_itself = json!([{ "op": "move", "from": "/spec", "path": "/spec/inner" }]);
    assert!(patch::json_patch(&mut doc, &into_itself).is_err());
    assert_eq!(doc, json!({ "spec": { "a": 1 } }), "refused patches changed nothing");
}
