//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`), as
//! far as the reviews need them: kubectl sends its `auth` reviews that way (it encodes every
//! built-in type in protobuf, and falls back to JSON only for CBOR), and accepts JSON back.
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` (`typeMeta`, `raw`, …) whose `raw` is
//! the object. The object is read against a schema of the few messages a review has and
//! turned into the JSON the review's JSON form would be, so one strict decoder (serde) reads
//! both; a field the schema does not know is an error, as an unknown JSON field is. Lengths are
//! checked against what is left, and messages nest only as deep as the schema.

use serde_json::{Map, Value};

/// The media type.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// How a field of a message is read.
#[derive(Debug)]
pub enum Field {
    /// A string, under this JSON name.
    Str(&'static str),
    /// A message read with its own schema, under this JSON name.
    Msg(&'static str, &'static [(u32, Field)]),
    /// A message whose content does not matter here (metadata, status, selectors): skipped,
    /// shown as `{}` under this JSON name.
    Skip(&'static str),
}

/// `ResourceAttributes` (authorization/v1).
pub const RESOURCE_ATTRIBUTES: &[(u32, Field)] = &[
    (1, Field::Str("namespace")),
    (2, Field::Str("verb")),
    (3, Field::Str("group")),
    (4, Field::Str("version")),
    (5, Field::Str("resource")),
    (6, Field::Str("subresource")),
    (7, Field::Str("name")),
    (8, Field::Skip("fieldSelector")),
    (9, Field::Skip("labelSelector")),
];

/// `NonResourceAttributes` (authorization/v1).
pub const NON_RESOURCE_ATTRIBUTES: &[(u32, Field)] = &[(1, Field::Str("path")), (2, Field::Str("verb"))];

/// `SelfSubjectAccessReview`: metadata, spec, status.
pub const SELF_SUBJECT_ACCESS_REVIEW: &[(u32, Field)] = &[
    (1, Field::Skip("metadata")),
    (
        2,
        Field::Msg(
            "spec",
            &[
                (1, Field::Msg("resourceAttributes", RESOURCE_ATTRIBUTES)),
                (2, Field::Msg("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES)),
            ],
        ),
    ),
    (3, Field::Skip("status")),
];

/// `SelfSubjectRulesReview`: metadata, spec (a namespace), status.
pub const SELF_SUBJECT_RULES_REVIEW: &[(u32, Field)] = &[
    (1, Field::Skip("metadata")),
    (2, Field::Msg("spec", &[(1, Field::Str("namespace"))])),
    (3, Field::Skip("status")),
];

/// Reads protobuf fields from a buffer.
struct Reader<'a> {
    buf: &'a [u8],
}

/// One field's value.
enum Wire<'a> {
    Varint,
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.buf.split_first().ok_or("a number is cut short")?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number is longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.buf.len())
            .ok_or("a field is longer than the body")?;
        let (taken, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(taken)
    }

    /// The next field's number and value, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => {
                self.varint()?;
                Wire::Varint
            }
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let len = self.varint()?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            other => return Err(format!("wire type {other} is not used by these messages")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

/// `buf`, a message of `schema`, as JSON.
fn message(buf: &[u8], schema: &[(u32, Field)]) -> Result<Value, String> {
    let mut out = Map::new();
    let mut r = Reader { buf };
    while let Some((number, wire)) = r.field()? {
        let field = schema.iter().find(|(n, _)| u64::from(*n) == number).map(|(_, f)| f);
        let (field, bytes) = match (field, wire) {
            (Some(f), Wire::Bytes(b)) => (f, b),
            (Some(_), _) => return Err(format!("field {number} has the wrong wire type")),
            (None, _) => return Err(format!("field {number} is not one of this message's")),
        };
        let (name, value) = match field {
            Field::Str(name) => {
                let s = std::str::from_utf8(bytes).map_err(|_| format!("{name} is not UTF-8"))?;
                (*name, Value::String(s.to_owned()))
            }
            Field::Msg(name, inner) => (*name, message(bytes, inner).map_err(|e| format!("{name}: {e}"))?),
            Field::Skip(name) => (*name, Value::Object(Map::new())),
        };
        out.insert(name.to_owned(), value);
    }
    Ok(Value::Object(out))
}

/// `typeMeta` of the envelope.
const TYPE_META: &[(u32, Field)] = &[(1, Field::Str("apiVersion")), (2, Field::Str("kind"))];

/// A protobuf request body as the JSON of its object: `apiVersion` and `kind` from the
/// envelope (`runtime.Unknown`), the rest read from its `raw` with `schema`.
pub fn decode(body: &[u8], schema: &[(u32, Field)]) -> Result<Value, String> {
    let unknown =
        body.strip_prefix(b"k8s\0").ok_or("the body does not start with the protobuf magic k8s\\0")?;
    let mut type_meta = Value::Object(Map::new());
    let mut object = None;
    let mut r = Reader { buf: unknown };
    while let Some((number, wire)) = r.field()? {
        let Wire::Bytes(bytes) = wire else {
            return Err(format!("envelope field {number} has the wrong wire type"));
        };
        match number {
            1 => type_meta = message(bytes, TYPE_META)?,
            2 => object = Some(message(bytes, schema)?),
            3 if bytes.is_empty() => {}
            3 => return Err("a content encoding is not supported".into()),
            4 => {}
            n => return Err(format!("envelope field {n} is unknown")),
        }
    }
    let mut object = object.unwrap_or_else(|| Value::Object(Map::new()));
    for (k, v) in type_meta.as_object().into_iter().flatten() {
        object[k] = v.clone();
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What kubectl 1.32 sent for `kubectl auth can-i create workloads`.
    const CAN_I: &[u8] = b"k8s\x00\x0a\x32\x0a\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\
\x12\x4d\x0a\x10\x0a\x00\x12\x00\x1a\x00\x22\x00\x2a\x002\x008\x00B\x00\x12\x2f\x0a\x2d\
\x0a\x07default\x12\x06create\x1a\x09univrs.io\x22\x00\x2a\x09workloads2\x00\x3a\x00\
\x1a\x08\x08\x00\x12\x00\x1a\x00\x20\x00\x1a\x00\x22\x00";

    #[test]
    fn reads_what_kubectl_sends() {
        let review = decode(CAN_I, SELF_SUBJECT_ACCESS_REVIEW).unwrap();
        assert_eq!(review["kind"], "SelfSubjectAccessReview");
        assert_eq!(review["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(
            review["spec"],
            json!({ "resourceAttributes": { "namespace": "default", "verb": "create", "group": "univrs.io",
                    "version": "", "resource": "workloads", "subresource": "", "name": "" } })
        );
    }

    #[test]
    fn refuses_what_it_does_not_know_or_that_is_cut_short() {
        assert!(decode(b"{}", SELF_SUBJECT_ACCESS_REVIEW).is_err());
        for cut in [10, 40, CAN_I.len() - 1] {
            assert!(decode(&CAN_I[..cut], SELF_SUBJECT_ACCESS_REVIEW).is_err(), "cut at {cut}");
        }
        // A spec with a field 3 (as a SubjectAccessReview's user would be): refused.
        let mut spec = vec![0x1a, 0x01, b'x'];
        let raw = [vec![0x12, spec.len() as u8], std::mem::take(&mut spec)].concat();
        let body = [b"k8s\0".to_vec(), vec![0x12, raw.len() as u8], raw].concat();
        let err = decode(&body, SELF_SUBJECT_ACCESS_REVIEW).unwrap_err();
        assert!(err.contains("field 3 is not one of"), "{err}");
        // A length beyond the body.
        assert!(decode(b"k8s\0\x12\xff\x01", SELF_SUBJECT_ACCESS_REVIEW).is_err());
    }
}
