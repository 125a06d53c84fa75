//! Every parser a stranger reaches in `api`, fed arbitrary and hostile input: YAML manifests,
//! label and field selectors, bearer tokens. Never a panic, never more than the input's worth
//! of memory.
//!
//! CI runs a short budget (the cases below); run a longer one on demand with
//! `PROPTEST_CASES=100000 cargo test -p api --test hostile_input --release`.

use proptest::prelude::*;
use serde_json::{Value, json};

fn config(cases: u32) -> ProptestConfig {
    // PROPTEST_CASES, when set, wins (the on-demand budget).
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Text that looks like what the parser expects, and bytes that do not.
fn texty(alphabet: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(proptest::sample::select(alphabet.chars().collect::<Vec<_>>()), 0..200)
            .prop_map(|c| c.into_iter().collect()),
        ".{0,200}",
    ]
}

/// Some JSON objects to match selectors against.
fn object() -> impl Strategy<Value = Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from), ".{0,8}".prop_map(Value::from)];
    let value = leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z./]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    (proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{0,4}", 0..4), value).prop_map(|(labels, spec)| {
        json!({ "metadata": { "name": "n", "namespace": "d", "labels": labels }, "spec": spec })
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn yaml_never_panics(text in texty("abc:-[]{}&*!|>'\"# \n\t0123456789.,?%@`~")) {
        if let Ok(docs) = api::manifest::parse_documents(&text) {
            // What comes out is no bigger than the input allows (aliases are budgeted).
            let out: usize = docs.iter().map(|d| d.to_string().len()).sum();
            prop_assert!(out <= 64 * text.len() + 64, "{} bytes of YAML became {out}", text.len());
        }
    }

    #[test]
    fn label_selectors_never_panic(text in texty("abc=!,() in notexists-_/.0123 "), obj in object()) {
        if let Ok(selector) = api::selector::LabelSelector::parse(&text) {
            let _ = selector.matches(obj.pointer("/metadata/labels").and_then(Value::as_object));
        }
    }

    #[test]
    fn field_selectors_never_panic(text in texty("abc=!,.metadata.namespec0123 "), obj in object()) {
        if let Ok(selector) = api::selector::FieldSelector::parse(&text) {
            let _ = selector.matches(&obj);
        }
    }

    #[test]
    fn tokens_never_panic(text in texty("eyJhbGciOiJFZERTQSJ9.-_ABCxyz0123456789")) {
        prop_assert!(api::token::verify(&text, "univrs:x", 1_700_000_000).is_err());
    }
}

#[test]
fn hostile_yaml_is_refused_within_its_budgets() {
    // An alias bomb: nine levels of ten references each.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    assert!(api::manifest::parse_documents(&bomb).is_err());
    // Deep nesting, in flow and block style.
    assert!(
        api::manifest::parse_documents(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))).is_err()
    );
    let block: String = (0..5_000).map(|i| format!("{}- \n", " ".repeat(i % 200))).collect();
    let _ = api::manifest::parse_documents(&block);
    // Many documents, a long key.
    let _ = api::manifest::parse_documents(&"---\na: 1\n".repeat(50_000));
    let _ = api::manifest::parse_documents(&format!("{}: 1", "k".repeat(1 << 20)));
}

#[test]
fn hostile_selectors_and_tokens_are_refused() {
    let long = "a=b,".repeat(100_000);
    let _ = api::selector::LabelSelector::parse(&long);
    let _ = api::selector::FieldSelector::parse(&long.replace('a', "metadata.name"));
    let _ = api::selector::LabelSelector::parse(&format!("x in ({})", "v,".repeat(100_000)));
    let _ = api::token::verify(&"a".repeat(1 << 20), "univrs:x", 0);
    let _ = api::token::verify(
        &format!("{}.{}.{}", "e".repeat(1 << 16), "e".repeat(1 << 16), "e".repeat(1 << 16)),
        "univrs:x",
        0,
    );
}
