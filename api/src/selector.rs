//! Label and field selectors, as the Kubernetes API takes them in `labelSelector` and
//! `fieldSelector` (`app=web,tier!=db,env in (a,b),!canary`).

use std::fmt;

use serde_json::Value;

/// The most requirements a label or a field selector may have: matching costs each of them
/// per object scanned, and anyone may send one.
pub const MAX_REQUIREMENTS: usize = 64;

/// The most values of the `in` and `notin` sets of a selector, all together.
pub const MAX_SET_VALUES: usize = 256;

/// The longest field path (`metadata.name`) and value a field selector may name, in bytes.
pub const MAX_FIELD_PATH: usize = 256;
/// See [`MAX_FIELD_PATH`].
pub const MAX_FIELD_VALUE: usize = 1024;

/// How much of a selector an error shows, and of what it says is wrong (which may quote it).
const SHOWN: usize = 120;
const SHOWN_REASON: usize = 240;

/// A selector that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The selector as given, cut to its first 120 characters (`…` marks a cut).
    pub selector: String,
    /// What is wrong, cut to 240 characters.
    pub reason: String,
}

impl SelectorError {
    fn new(selector: &str, reason: String) -> Self {
        Self { selector: cut(selector, SHOWN), reason: cut(&reason, SHOWN_REASON) }
    }
}

/// The first `n` characters of `s`, and `…` if there were more.
fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The non-empty parts of a selector, refused when there are more than [`MAX_REQUIREMENTS`].
fn requirements_of<'a>(parts: impl Iterator<Item = &'a str>) -> Result<Vec<&'a str>, String> {
    let parts: Vec<&str> =
        parts.map(str::trim).filter(|p| !p.is_empty()).take(MAX_REQUIREMENTS + 1).collect();
    if parts.len() > MAX_REQUIREMENTS {
        return Err(format!(
            "more than {MAX_REQUIREMENTS} requirements: at most {MAX_REQUIREMENTS} requirements are allowed"
        ));
    }
    Ok(parts)
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also true when the label is absent).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when the label is absent).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, get: &impl Fn(&str) -> Option<String>) -> bool {
        match self {
            Requirement::Equals(k, v) => get(k).as_deref() == Some(v),
            Requirement::NotEquals(k, v) => get(k).as_deref() != Some(v),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        }
    }
}

/// A label selector: every requirement must hold. Empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses the `labelSelector` syntax of Kubernetes.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let err = |reason: String| SelectorError::new(s, reason);
        let parts = requirements_of(split_top_level(s).into_iter()).map_err(err)?;
        let out: Vec<Requirement> =
            parts.into_iter().map(parse_requirement).collect::<Result<_, _>>().map_err(err)?;
        let values: usize = out
            .iter()
            .map(|r| match r {
                Requirement::In(_, vs) | Requirement::NotIn(_, vs) => vs.len(),
                _ => 0,
            })
            .sum();
        if values > MAX_SET_VALUES {
            return Err(err(format!(
                "{values} values in its sets: at most {MAX_SET_VALUES} values are allowed in all"
            )));
        }
        Ok(Self(out))
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str).map(str::to_owned);
        self.0.iter().all(|r| r.matches(&get))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its requirements, every one of which must hold.
    pub fn requirements(&self) -> &[Requirement] {
        &self.0
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn check_key(k: &str) -> Result<String, String> {
    crate::validation::check_qualified_name(k).map_err(|e| format!("label key {k:?}: {e}"))?;
    Ok(k.to_owned())
}

fn check_value(v: &str) -> Result<String, String> {
    crate::validation::check_label_value(v).map_err(|e| format!("label value {v:?}: {e}"))?;
    Ok(v.to_owned())
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(check_key(key.trim())?));
    }
    for (op, ctor) in [("!=", 0), ("==", 1), ("=", 1)] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (check_key(k.trim())?, check_value(v.trim())?);
            return Ok(if ctor == 0 { Requirement::NotEquals(k, v) } else { Requirement::Equals(k, v) });
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words[..] {
        let rest = rest.trim();
        let (notin, set) = if let Some(set) = rest.strip_prefix("notin") {
            (true, set)
        } else if let Some(set) = rest.strip_prefix("in") {
            (false, set)
        } else {
            return Err(format!("expected `in` or `notin` after {key:?}, found {rest:?}"));
        };
        let set = set.trim();
        let inner = set
            .strip_prefix('(')
            .and_then(|x| x.strip_suffix(')'))
            .ok_or_else(|| format!("expected a set in parentheses, like (a,b), found {set:?}"))?;
        if inner.split(',').nth(MAX_SET_VALUES).is_some() {
            return Err(format!(
                "the set of {key:?} has more than {MAX_SET_VALUES} values: at most {MAX_SET_VALUES} values are allowed"
            ));
        }
        let values = inner.split(',').map(|v| check_value(v.trim())).collect::<Result<Vec<_>, _>>()?;
        let key = check_key(key)?;
        return Ok(if notin { Requirement::NotIn(key, values) } else { Requirement::In(key, values) });
    }
    Ok(Requirement::Exists(check_key(part)?))
}

/// A field selector: `metadata.name=x,metadata.namespace!=y`. Any dotted path to a string,
/// number or boolean field of the object can be selected on (an absent field compares as
/// the empty string, as in Kubernetes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the `fieldSelector` syntax of Kubernetes (`=`, `==`, `!=`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let err = |reason: String| SelectorError::new(s, reason);
        let mut out = Vec::new();
        for part in requirements_of(s.split(',')).map_err(err)? {
            let (path, equal, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k, true, v)
            } else {
                return Err(err(format!("{part:?} is not of the form field=value or field!=value")));
            };
            let (path, value) = (path.trim(), value.trim());
            if path.len() > MAX_FIELD_PATH {
                return Err(err(format!(
                    "a field path of {} bytes; at most {MAX_FIELD_PATH} are allowed",
                    path.len()
                )));
            }
            if value.len() > MAX_FIELD_VALUE {
                return Err(err(format!(
                    "the value of {path:?} has {} bytes; at most {MAX_FIELD_VALUE} are allowed",
                    value.len()
                )));
            }
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(err(format!("{path:?} is not a field path like metadata.name")));
            }
            out.push((path.to_owned(), equal, value.to_owned()));
        }
        Ok(Self(out))
    }

    /// Whether `object` is selected.
    pub fn matches(&self, object: &Value) -> bool {
        self.matches_with(|path| path.split('.').try_fold(object, |v, k| v.get(k)).cloned())
    }

    /// Whether the object whose field at each dotted path is `field(path)` is selected.
    pub fn matches_with(&self, mut field: impl FnMut(&str) -> Option<Value>) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let found = match field(path) {
                Some(Value::String(s)) => s,
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (found == *value) == *equal
        })
    }

    /// The dotted paths of the fields it selects on.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(path, _, _)| path.as_str())
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same selector on the fields `field` maps each path to (another form of the same
    /// object), or the first path it knows nothing of.
    pub fn map_paths(self, field: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        self.0
            .into_iter()
            .map(|(path, equal, value)| field(&path).map(|p| (p, equal, value)).ok_or(path))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

/// A label and a field selector together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// On `metadata.labels`.
    pub labels: LabelSelector,
    /// On fields.
    pub fields: FieldSelector,
}

impl Selector {
    /// Whether `object` is selected by both.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.get("metadata").and_then(|m| m.get("labels")).and_then(Value::as_object);
        self.labels.matches(labels) && self.fields.matches(object)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_operator_selects_as_kubernetes_does() {
        let l = labels(json!({"app": "web", "tier": "front", "env": "prod"}));
        let yes = [
            "",
            "app=web",
            "app==web",
            "tier!=db",
            "missing!=x",
            "env in (prod, staging)",
            "env notin (dev)",
            "missing notin (dev)",
            "app",
            "!missing",
            "app=web,env in (prod),!canary",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s} should select");
        }
        let no = [
            "app=db",
            "tier!=front",
            "env in (dev)",
            "env notin (prod)",
            "missing",
            "!app",
            "app=web,tier=db",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s} should not select");
        }
        assert!(LabelSelector::parse("!app").unwrap().matches(None));
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        for s in ["app in web", "bad key=x", "app=-x", "env foo (a)"] {
            let e = LabelSelector::parse(s).unwrap_err();
            assert_eq!(e.selector, s);
            assert!(!e.reason.is_empty());
        }
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::parse("metadata..name=x").is_err());
    }

    #[test]
    fn selectors_are_bounded_and_an_error_shows_only_the_start_of_one() {
        let many = |n: usize, part: &str| vec![part; n].join(",");
        assert_eq!(LabelSelector::parse(&many(MAX_REQUIREMENTS, "a=b")).unwrap().requirements().len(), 64);
        let e = LabelSelector::parse(&many(MAX_REQUIREMENTS + 1, "a=b")).unwrap_err();
        assert!(e.reason.contains("at most 64 requirements are allowed"), "{e}");
        assert_eq!(e.selector, format!("{}…", &many(MAX_REQUIREMENTS + 1, "a=b")[..SHOWN]));
        // Empty parts are not requirements.
        assert!(LabelSelector::parse(&format!("a=b{}", ",".repeat(1000))).is_ok());
        assert!(FieldSelector::parse(&many(MAX_REQUIREMENTS, "metadata.name=x")).is_ok());
        let e = FieldSelector::parse(&many(MAX_REQUIREMENTS + 1, "metadata.name=x")).unwrap_err();
        assert!(e.reason.contains("at most 64"), "{e}");
        let set = |n: usize| format!("env in ({})", vec!["v"; n].join(","));
        assert!(LabelSelector::parse(&set(MAX_SET_VALUES)).is_ok());
        let e = LabelSelector::parse(&set(MAX_SET_VALUES + 1)).unwrap_err();
        assert!(e.reason.contains("\"env\"") && e.reason.contains("at most 256 values"), "{e}");
        let e =
            LabelSelector::parse(&format!("{},{}", set(200), set(200).replace("env", "tier"))).unwrap_err();
        assert!(e.reason.contains("400 values in its sets: at most 256 values are allowed in all"), "{e}");
        // What is wrong quotes no more of the selector than a line.
        for e in [
            FieldSelector::parse(&"x".repeat(100_000)).unwrap_err(),
            LabelSelector::parse(&format!("{}=v", "k".repeat(100_000))).unwrap_err(),
        ] {
            assert!(e.to_string().chars().count() < 400, "{e}");
        }
        let long_path = format!("{}=x", "a.".repeat(MAX_FIELD_PATH / 2 + 1) + "a");
        let e = FieldSelector::parse(&long_path).unwrap_err();
        assert!(e.reason.contains("field path of 259 bytes") && e.to_string().len() < 300, "{e}");
        let e =
            FieldSelector::parse(&format!("metadata.name={}", "x".repeat(MAX_FIELD_VALUE + 1))).unwrap_err();
        assert!(e.reason.contains("\"metadata.name\" has 1025 bytes"), "{e}");
    }

    #[test]
    fn field_selectors_compare_fields() {
        let obj =
            json!({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"nodeName": "n1", "replicas": 3}});
        let yes = [
            "metadata.name=a",
            "metadata.namespace==ns",
            "metadata.name!=b",
            "spec.nodeName=n1",
            "spec.replicas=3",
            "spec.missing=",
        ];
        for s in yes {
            assert!(FieldSelector::parse(s).unwrap().matches(&obj), "{s}");
        }
        for s in ["metadata.name=b", "spec.nodeName!=n1", "spec.missing=x"] {
            assert!(!FieldSelector::parse(s).unwrap().matches(&obj), "{s}");
        }
    }

    proptest! {
        #[test]
        fn a_printed_selector_parses_back_the_same(
            reqs in prop::collection::vec(
                (0usize..6, "[a-z][a-z0-9]{0,6}", prop::collection::vec("[a-z0-9]{1,5}", 1..3)),
                0..4,
            )
        ) {
            let sel = LabelSelector(reqs.into_iter().map(|(op, k, vs)| match op {
                0 => Requirement::Equals(k, vs[0].clone()),
                1 => Requirement::NotEquals(k, vs[0].clone()),
                2 => Requirement::In(k, vs),
                3 => Requirement::NotIn(k, vs),
                4 => Requirement::Exists(k),
                _ => Requirement::DoesNotExist(k),
            }).collect());
            prop_assert_eq!(LabelSelector::parse(&sel.to_string()).unwrap(), sel);
        }
    }
}
