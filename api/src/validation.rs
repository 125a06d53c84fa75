//! Field paths and validation errors.
//!
//! Validation never stops at the first problem: every check pushes a [`FieldError`] naming
//! the field path (`spec.env[2].name`) so that a user sees everything wrong with a manifest
//! at once, the way the Kubernetes apiserver reports `details.causes`.

use std::fmt;

/// A dotted path to a field of an object, such as `spec.env[0].name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    /// The path of the object itself.
    #[must_use]
    pub fn root() -> Self {
        Self(String::new())
    }

    /// A named child field: `spec` → `spec.replicas`.
    #[must_use]
    pub fn child(&self, name: &str) -> Self {
        // Made at every descent of every validation, error or not: joined by hand, as
        // `format!` costs several times more.
        if self.0.is_empty() { Self(name.to_owned()) } else { self.joined(&[".", name]) }
    }

    /// An element of a list: `spec.env` → `spec.env[2]`.
    #[must_use]
    pub fn index(&self, i: usize) -> Self {
        self.joined(&["[", &i.to_string(), "]"])
    }

    /// An entry of a map: `metadata.labels` → `metadata.labels[app]`.
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        self.joined(&["[", key, "]"])
    }

    fn joined(&self, parts: &[&str]) -> Self {
        let mut path = String::with_capacity(self.0.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        path.push_str(&self.0);
        for p in parts {
            path.push_str(p);
        }
        Self(path)
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An error at this path.
    pub fn error(&self, message: impl Into<String>) -> FieldError {
        FieldError { path: self.0.clone(), message: message.into() }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Where the problem is, e.g. `spec.replicas`; empty for the object as a whole.
    pub path: String,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// Types that can check themselves and report every problem with its field path.
pub trait Validate {
    /// Push one [`FieldError`] per problem found under `path`.
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>);
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Some(v) = self {
            v.validate(path, errors);
        }
    }
}

impl<T: Validate> Validate for Vec<T> {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        for (i, v) in self.iter().enumerate() {
            v.validate(&path.index(i), errors);
        }
    }
}

/// Maximum length of a DNS-1123 label.
pub const DNS1123_LABEL_MAX: usize = 63;
/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;

/// Checks a DNS-1123 label (namespaces): lowercase alphanumerics and `-`, starting and
/// ending with an alphanumeric, at most 63 characters. Returns why not, if not.
pub fn check_dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > DNS1123_LABEL_MAX {
        return Err(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !s.chars().all(ok_char) || !edge(s.chars().next()) || !edge(s.chars().last()) {
        return Err(format!(
            "{s:?} is not a valid DNS-1123 label: use lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (object names): dot-separated DNS-1123 labels, at most 253
/// characters in all.
pub fn check_dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    if s.split('.').any(|label| check_dns1123_label(label).is_err()) {
        return Err(format!(
            "{s:?} is not a valid name: use lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of
/// at most 63 characters of alphanumerics, `-`, `_` and `.`, starting and ending with an
/// alphanumeric.
pub fn check_qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        check_dns1123_subdomain(p).map_err(|e| format!("prefix of {s:?}: {e}"))?;
    }
    check_label_value(name)
        .and_then(|()| if name.is_empty() { Err("name part must not be empty".into()) } else { Ok(()) })
        .map_err(|e| format!("{s:?} is not a valid key: {e}"))
}

/// Checks a label value: empty, or at most 63 characters of alphanumerics, `-`, `_` and `.`,
/// starting and ending with an alphanumeric.
pub fn check_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > DNS1123_LABEL_MAX {
        return Err(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !s.chars().all(ok_char) || !edge(s.chars().next()) || !edge(s.chars().last()) {
        return Err(
            "use letters, digits, '-', '_' and '.', starting and ending with a letter or digit".into()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_kubernetes() {
        let p = FieldPath::root().child("spec").child("env").index(2).child("name");
        assert_eq!(p.as_str(), "spec.env[2].name");
        assert_eq!(
            FieldPath::root().child("metadata").child("labels").key("app").as_str(),
            "metadata.labels[app]"
        );
        assert_eq!(p.error("must not be empty").to_string(), "spec.env[2].name: must not be empty");
    }

    #[test]
    fn dns_names() {
        for ok in ["a", "web-1", "a.b-c.d", "0abc"] {
            assert!(check_dns1123_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", &"a".repeat(254)] {
            assert!(check_dns1123_subdomain(bad).is_err(), "{bad}");
        }
        assert!(check_dns1123_label("a.b").is_err());
        assert!(check_dns1123_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn label_keys_and_values() {
        assert!(check_qualified_name("app").is_ok());
        assert!(check_qualified_name("univrs.io/signer").is_ok());
        assert!(check_qualified_name("kubernetes.io/").is_err());
        assert!(check_qualified_name("Bad Key").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_3").is_ok());
        assert!(check_label_value("-x").is_err());
    }
}
