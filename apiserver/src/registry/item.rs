//! A listed object as its caller sees it, served from its stored JSON when nothing of it is
//! hidden from the caller: a list of 500 then costs reading 500 records and a few fields of
//! each, not parsing, redacting and serializing 500 whole objects.
//!
//! [`Plan`] decides per list ([`access::as_stored`]) and per object (on the few fields it
//! picks without building the object: the labels and fields the selector reads, the secret
//! and the last-applied annotation redaction would hide). An object it cannot decide on is
//! built as before: [`Served::Build`].

use std::fmt;

use api::KindInfo;
use api::selector::Selector;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::ApiError;
use super::error::unavailable;
use crate::access::{self, AsStored, Caller};

/// One object of a list.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// Parsed and redacted.
    Built(Value),
    /// The stored JSON with its `resourceVersion` written into its `metadata`: the same
    /// object as [`Item::Built`] would hold (shared by the watchers of a change).
    Stored(std::sync::Arc<str>),
}

impl Item {
    /// The object as a value (parsing a stored one: an error for stored JSON that serde_json
    /// reads but will not build, such as a number out of range, as building it in a list
    /// would have been).
    pub fn into_value(self) -> Result<Value, ApiError> {
        match self {
            Item::Built(v) => Ok(v),
            Item::Stored(json) => serde_json::from_str(&json).map_err(unavailable),
        }
    }

    /// About how long its JSON is (exactly, as stored).
    pub fn len_hint(&self) -> usize {
        match self {
            Item::Built(_) => 1024,
            Item::Stored(json) => json.len(),
        }
    }

    /// Appends the object's JSON to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Item::Built(v) => serde_json::to_writer(out, v).expect("values serialize"),
            Item::Stored(json) => out.extend_from_slice(json.as_bytes()),
        }
    }
}

/// What a list or a watch does with one stored object.
#[derive(Debug)]
pub enum Served {
    /// Not selected: skipped.
    Skip,
    /// Shown as stored.
    Item(Item),
    /// Only the built object can tell: parse, redact, select.
    Build,
}

/// How one list or watch serves its objects (see the module).
#[derive(Debug)]
pub struct Plan<'s> {
    selector: &'s Selector,
    /// Whether an object with a secret or a last-applied annotation is built (the caller
    /// holds no role that shows it).
    check_secret: bool,
    /// The fields every plan of the kind picks (see [`Outline`]).
    base: Paths,
    /// The selector's fields.
    fields: Paths,
    /// Where each of its requirements' fields is among the picks of `fields`.
    field_picks: Vec<usize>,
}

/// Where in the base picks.
const METADATA: usize = 0;
const LABELS: usize = 1;
const RESOURCE_VERSION: usize = 2;
const LAST_APPLIED: usize = 3;
const SECRET: usize = 4;

/// A path of plain keys from a dotted path or a JSON pointer (the rules' own, without `~`
/// escapes).
fn keys(path: &str, separator: char) -> Vec<String> {
    path.trim_start_matches(separator).split(separator).map(str::to_owned).collect()
}

/// What a plan decides an object on, the same for every plan of its kind: its labels,
/// whether a reader without a role would see it redacted, and where its `metadata` closes.
#[derive(Debug)]
struct Look {
    labels: Option<Value>,
    hides: bool,
    /// The offset of the `}` closing `metadata`, and whether `metadata` has fields.
    close: usize,
    has_fields: bool,
}

impl Look {
    /// `json` with `"resourceVersion":"revision"` written last in its `metadata`.
    fn splice(&self, json: &str, revision: u64) -> std::sync::Arc<str> {
        let comma = if self.has_fields { "," } else { "" };
        let field = format!("{comma}\"resourceVersion\":\"{revision}\"");
        let mut out = String::with_capacity(json.len() + field.len());
        out.push_str(&json[..self.close]);
        out.push_str(&field);
        out.push_str(&json[self.close..]);
        out.into()
    }
}

/// One stored object outlined once for every plan of its kind (so the watchers of a change
/// share one): what they decide on, and its JSON at a revision.
#[derive(Debug)]
pub struct Outline {
    look: Look,
    json: std::sync::Arc<str>,
}

impl<'s> Plan<'s> {
    /// The plan of a list or watch of `kind` by `who` under `selector`; `None`: every object
    /// is built.
    pub fn new(who: &Caller, kind: &KindInfo, selector: &'s Selector) -> Option<Self> {
        let check_secret = match access::as_stored(who, kind) {
            AsStored::Never => return None,
            AsStored::Always => false,
            AsStored::UnlessSecret => true,
        };
        let mut base = Paths::default();
        for path in [
            vec!["metadata".into()],
            vec!["metadata".into(), "labels".into()],
            vec!["metadata".into(), "resourceVersion".into()],
            vec!["metadata".into(), "annotations".into(), api::signing::LAST_APPLIED.into()],
            // Nothing is ever at an empty key: a kind without a secret picks nothing there.
            access::secret_pointer(kind).map_or(vec![String::new()], |p| keys(p, '/')),
        ] {
            base.add(&path);
        }
        let mut fields = Paths::default();
        let mut field_picks = Vec::new();
        for path in selector.fields.paths() {
            // `resourceVersion` is not in the stored JSON: only the built object has it.
            if path == "metadata" || path.starts_with("metadata.resourceVersion") {
                return None;
            }
            field_picks.push(fields.add(&keys(path, '.')));
        }
        Some(Self { selector, check_secret, base, fields, field_picks })
    }

    /// Whether it selects every object it is shown (no selector).
    pub fn selects_all(&self) -> bool {
        self.selector.labels.is_empty() && self.selector.fields.is_empty()
    }

    /// What to do with the stored object `json`, shown at `revision` (its JSON is written
    /// only if it is shown).
    pub fn serve(&self, json: &str, revision: u64) -> Served {
        let Some(look) = self.look(json) else { return Served::Build };
        match self.decide(&look, json) {
            Some(true) => Served::Item(Item::Stored(look.splice(json, revision))),
            Some(false) => Served::Skip,
            None => Served::Build,
        }
    }

    /// The stored object `json` at `revision` as [`Plan::serve_outlined`] takes it; `None`:
    /// only building it can tell.
    pub fn outline(&self, json: &str, revision: u64) -> Option<Outline> {
        let look = self.look(json)?;
        let json = look.splice(json, revision);
        Some(Outline { look, json })
    }

    /// What to do with an outlined object, `json` being what it was outlined from.
    pub fn serve_outlined(&self, outline: &Outline, json: &str) -> Served {
        match self.decide(&outline.look, json) {
            Some(true) => Served::Item(Item::Stored(outline.json.clone())),
            Some(false) => Served::Skip,
            None => Served::Build,
        }
    }

    /// What the plan decides `json` on; `None`: only building it can tell (it cannot be read
    /// here, or already holds a `resourceVersion`).
    fn look(&self, json: &str) -> Option<Look> {
        let picks = pick(json, &self.base).ok()?;
        let meta = picks[METADATA].filter(|m| m.get().starts_with('{'))?;
        if picks[RESOURCE_VERSION].is_some() {
            return None;
        }
        let labels = picks[LABELS].map(|raw| serde_json::from_str(raw.get())).transpose().ok()?;
        let hides = picks[LAST_APPLIED].is_some()
            || picks[SECRET].is_some_and(|raw| !matches!(raw.get(), "null" | "[]"));
        // An offset into the JSON `metadata` was picked from.
        let close = meta.get().as_ptr() as usize - json.as_ptr() as usize + meta.get().len() - 1;
        let has_fields = !meta.get()[1..meta.get().len() - 1].trim().is_empty();
        Some(Look { labels, hides, close, has_fields })
    }

    /// Whether the object `json`, looked at, is shown as stored and selected; `None`: only
    /// building it can tell (redaction would change it, or a field cannot be read here).
    fn decide(&self, look: &Look, json: &str) -> Option<bool> {
        if self.check_secret && look.hides {
            return None;
        }
        if !self.selector.labels.matches(look.labels.as_ref().and_then(Value::as_object)) {
            return Some(false);
        }
        if self.selector.fields.is_empty() {
            return Some(true);
        }
        let picks = pick(json, &self.fields).ok()?;
        let mut values = Vec::with_capacity(self.field_picks.len());
        for &i in &self.field_picks {
            values.push(picks[i].map(|raw| serde_json::from_str::<Value>(raw.get())).transpose().ok()?);
        }
        // `matches_with` asks for each requirement's field in the selector's order.
        let mut values = values.into_iter();
        Some(self.selector.fields.matches_with(|_| values.next().flatten()))
    }
}

/// Paths to pick from a JSON object, as a tree of keys: at each key, the index of its value
/// among the picks (if it is picked itself) and the keys below it.
#[derive(Debug, Default)]
struct Paths {
    keys: Vec<(String, Option<usize>, Paths)>,
    /// Paths added so far (at the root: all of them).
    count: usize,
}

impl Paths {
    /// Adds `path` (at least one key), returning its index among the picks (the same path
    /// twice: the one index).
    fn add(&mut self, path: &[String]) -> usize {
        let next = self.count;
        let index = *self.slot(path).get_or_insert(next);
        if index == next {
            self.count += 1;
        }
        index
    }

    fn slot(&mut self, path: &[String]) -> &mut Option<usize> {
        let (key, rest) = path.split_first().expect("a path has a key");
        let i = match self.keys.iter().position(|(k, _, _)| k == key) {
            Some(i) => i,
            None => {
                self.keys.push((key.clone(), None, Paths::default()));
                self.keys.len() - 1
            }
        };
        let (_, slot, below) = &mut self.keys[i];
        if rest.is_empty() { slot } else { below.slot(rest) }
    }
}

/// The values at `paths` of the JSON `json`, borrowed from it (`None` where absent), without
/// building anything else of it. An error: `json` is not JSON, a key on a path comes twice,
/// or is written with escapes (the caller then builds the object, which settles it).
fn pick<'a>(json: &'a str, paths: &Paths) -> Result<Vec<Option<&'a RawValue>>, serde_json::Error> {
    let mut out = vec![None; paths.count];
    pick_into(json, paths, &mut out)?;
    Ok(out)
}

fn pick_into<'a>(
    json: &'a str,
    paths: &Paths,
    out: &mut [Option<&'a RawValue>],
) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    Pick { at: paths, out }.deserialize(&mut de)?;
    de.end()
}

struct Pick<'p, 'o, 'a> {
    at: &'p Paths,
    out: &'o mut [Option<&'a RawValue>],
}

impl<'de> DeserializeSeed<'de> for Pick<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = vec![false; self.at.keys.len()];
        while let Some(key) = map.next_key::<&'de str>()? {
            let Some(i) = self.at.keys.iter().position(|(k, _, _)| k == key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                return Err(de::Error::custom(format!("the key {key:?} comes twice")));
            }
            let (_, slot, below) = &self.at.keys[i];
            match slot {
                Some(slot) => {
                    let raw: &'de RawValue = map.next_value()?;
                    self.out[*slot] = Some(raw);
                    if !below.keys.is_empty() {
                        pick_into(raw.get(), below, self.out).map_err(de::Error::custom)?;
                    }
                }
                None => map.next_value_seed(Pick { at: below, out: &mut *self.out })?,
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::raft::Stored;
    use crate::registry::meta::with_revision;

    pub(crate) fn caller(member: bool) -> Caller {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
        Caller::identity(api::identity::Did::from_key(&key), member)
    }

    pub(crate) fn kind(name: &str) -> &'static KindInfo {
        api::kinds::KINDS.iter().find(|k| k.kind == name).expect("a kind")
    }

    /// A world without Nodes, grants or other objects.
    pub(crate) struct Empty;

    impl access::Lookup for Empty {
        fn node(&self, _: &str) -> Option<access::NodeFacts> {
            None
        }

        fn object(&self, _: &KindInfo, _: Option<&str>, _: &str) -> Option<access::ObjectFacts> {
            None
        }

        fn grants(&self, _: &str) -> Vec<std::sync::Arc<access::agent::GrantFacts>> {
            Vec::new()
        }
    }

    pub(crate) fn stored(obj: &Value, rev: u64) -> Stored {
        Stored { create_revision: 1, mod_revision: rev, value: serde_json::to_string(obj).unwrap() }
    }

    /// What a list served before plans: parse, redact, select.
    fn built(who: &Caller, kind: &KindInfo, sel: &Selector, s: &Stored) -> Option<Value> {
        access::redact(who, kind, with_revision(s).unwrap(), &Empty).filter(|o| sel.matches(o))
    }

    fn serve(plan: &Plan<'_>, s: &Stored) -> Served {
        plan.serve(&s.value, s.mod_revision)
    }

    fn served(who: &Caller, kind: &KindInfo, sel: &Selector, s: &Stored) -> Option<Value> {
        match Plan::new(who, kind, sel) {
            None => built(who, kind, sel, s),
            Some(plan) => match plan.serve(&s.value, s.mod_revision) {
                Served::Skip => None,
                Served::Item(item) => Some(item.into_value().unwrap()),
                Served::Build => built(who, kind, sel, s),
            },
        }
    }

    pub(crate) fn selector(labels: &str, fields: &str) -> Selector {
        Selector {
            labels: api::selector::LabelSelector::parse(labels).unwrap(),
            fields: api::selector::FieldSelector::parse(fields).unwrap(),
        }
    }

    pub(crate) fn replica(labels: Value, env: Option<Value>, annotations: Option<Value>) -> Value {
        let mut obj = json!({
            "apiVersion": "univrs.io/v1", "kind": "Replica",
            "metadata": { "name": "r1", "namespace": "default", "labels": labels, "uid": "u" },
            "spec": { "nodeName": "n1", "container": { "image": "x", "command": ["a", "b"] } },
        });
        if let Some(env) = env {
            obj["spec"]["container"]["env"] = env;
        }
        if let Some(a) = annotations {
            obj["metadata"]["annotations"] = a;
        }
        obj
    }

    #[test]
    fn a_stored_item_is_the_built_object_with_its_resource_version() {
        let kind = kind("Replica");
        let obj = replica(json!({ "group": "g1" }), None, None);
        let plan_sel = selector("group=g1", "spec.nodeName=n1");
        let plan =
            Plan::new(&caller(false), kind, &plan_sel).expect("replicas without env are served as stored");
        let Served::Item(Item::Stored(json)) = serve(&plan, &stored(&obj, 42)) else {
            panic!("served as stored")
        };
        let mut expected = obj.clone();
        expected["metadata"]["resourceVersion"] = "42".into();
        // Byte for byte what building it writes: `resourceVersion` last in `metadata`.
        assert_eq!(&*json, serde_json::to_string(&expected).unwrap());
        assert!(matches!(
            serve(&plan, &stored(&replica(json!({ "group": "g2" }), None, None), 1)),
            Served::Skip
        ));
    }

    #[test]
    fn what_redaction_would_change_is_built() {
        let kind = kind("Replica");
        let sel = Selector::default();
        let stranger = caller(false);
        let plan = Plan::new(&stranger, kind, &sel).unwrap();
        let secret = replica(json!({}), Some(json!([{ "name": "A", "value": "s3cret" }])), None);
        let applied = replica(json!({}), None, Some(json!({ api::signing::LAST_APPLIED: "{}" })));
        for obj in [&secret, &applied] {
            assert!(matches!(serve(&plan, &stored(obj, 1)), Served::Build), "{obj}");
            let seen = served(&stranger, kind, &sel, &stored(obj, 1)).unwrap();
            assert!(!seen.to_string().contains("s3cret"));
            assert!(seen["metadata"]["annotations"].get(api::signing::LAST_APPLIED).is_none());
        }
        // A member sees it all, as stored.
        let member = caller(true);
        let plan = Plan::new(&member, kind, &sel).unwrap();
        assert!(matches!(serve(&plan, &stored(&secret, 1)), Served::Item(_)));
        // An empty env hides nothing.
        let none = replica(json!({}), Some(json!([])), None);
        assert!(matches!(
            serve(&Plan::new(&stranger, kind, &sel).unwrap(), &stored(&none, 1)),
            Served::Item(_)
        ));
    }

    #[test]
    fn private_kinds_are_built_for_all_but_members() {
        let event = kind("Event");
        let sel = Selector::default();
        assert!(Plan::new(&caller(false), event, &sel).is_none());
        assert!(Plan::new(&caller(true), event, &sel).is_some());
    }

    #[test]
    fn objects_it_cannot_read_simply_are_built() {
        let kind = kind("Replica");
        let sel = Selector::default();
        let plan = Plan::new(&caller(true), kind, &sel).unwrap();
        for json in [
            r#"{"metadata":{"name":"a"},"metadata":{"name":"b"}}"#,
            r#"{"metadata":{"name":"a","resourceVersion":"3"}}"#,
            r#"{"meta\u0064ata":{"name":"a"}}"#,
            r#"{"metadata":"a"}"#,
            r#"{"spec":{}}"#,
        ] {
            let s = Stored { create_revision: 1, mod_revision: 9, value: json.into() };
            assert!(matches!(serve(&plan, &s), Served::Build), "{json}");
        }
        // JSON that serde_json reads but will not build: served, then refused when built, never a
        // panic (a list that builds it answers 503, as before).
        let huge = Stored {
            create_revision: 1,
            mod_revision: 9,
            value: r#"{"metadata":{},"spec":{"x":1e400}}"#.into(),
        };
        let Served::Item(item) = serve(&plan, &huge) else { panic!("served") };
        assert!(item.into_value().is_err());
        let empty = Stored { create_revision: 1, mod_revision: 9, value: r#"{"metadata":{ }}"#.into() };
        let Served::Item(Item::Stored(json)) = serve(&plan, &empty) else { panic!() };
        assert_eq!(&*json, r#"{"metadata":{ "resourceVersion":"9"}}"#);
    }

    pub(crate) fn label_value() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned)
    }

    proptest! {
        /// Served as stored or built, a list shows each object exactly as building it did.
        #[test]
        fn serving_as_stored_shows_what_building_shows(
            app in proptest::option::of(label_value()),
            tier in proptest::option::of(label_value()),
            node in label_value(),
            env in proptest::option::of(prop::sample::select(vec![json!([]), json!(null), json!([{ "name": "K", "value": "v" }]), json!("x")])),
            applied: bool,
            member: bool,
            labels in prop::sample::select(vec!["", "app=a", "app!=a", "app in (a,b)", "!tier", "tier", "app=a,tier notin (c)"]),
            fields in prop::sample::select(vec![
                "", "spec.nodeName=a", "spec.nodeName!=b", "metadata.name=r1", "spec.container.env=", "spec.missing=",
                "spec.nodeName=a,spec.nodeName!=a", "spec.nodeName=a,spec.nodeName=a",
                "spec.nodeName=a,metadata.name=r1,spec.nodeName!=b", "metadata.name=r1,metadata.labels.app=a",
                "metadata.resourceVersion=7", "metadata.resourceVersion!=7",
            ]),
        ) {
            let mut l = serde_json::Map::new();
            if let Some(v) = app { l.insert("app".into(), v.into()); }
            if let Some(v) = tier { l.insert("tier".into(), v.into()); }
            let mut obj = replica(Value::Object(l), env, applied.then(|| json!({ api::signing::LAST_APPLIED: "{}", "other": "x" })));
            obj["spec"]["nodeName"] = node.into();
            let (who, kind, sel) = (caller(member), kind("Replica"), selector(labels, fields));
            let s = stored(&obj, 7);
            prop_assert_eq!(served(&who, kind, &sel, &s), built(&who, kind, &sel, &s));
        }
    }
}
