use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::object::{KindSpec, Scope};
use crate::validation::{FieldError, FieldPath, Validate};

/// The labels and annotations of kubectl's ApplySet specification (KEP-3659), as kubectl
/// ships them. They say which set an object belongs to and what a set's parent contains: the
/// set's tools write them, so they are outside every signature (`crate::signing`).
pub mod applyset {
    /// On a parent: the set's id (see [`id`]).
    pub const ID: &str = "applyset.kubernetes.io/id";
    /// On a member: the id of the set it belongs to.
    pub const PART_OF: &str = "applyset.kubernetes.io/part-of";
    /// On a parent: the tool that manages the set, `NAME/VERSION`.
    pub const TOOLING: &str = "applyset.kubernetes.io/tooling";
    /// On a parent: the kinds of its members, `Kind.group`, sorted, comma-separated.
    pub const CONTAINS_GROUP_KINDS: &str = "applyset.kubernetes.io/contains-group-kinds";
    /// On a parent: namespaces of members other than the parent's, sorted.
    pub const ADDITIONAL_NAMESPACES: &str = "applyset.kubernetes.io/additional-namespaces";
    /// On a parent (kubectl before 1.28): the resources of its members.
    pub const CONTAINS_GROUP_RESOURCES: &str = "applyset.kubernetes.io/contains-group-resources";
    /// On a CRD: its kind may be a parent (what kubectl looks for).
    pub const IS_PARENT_TYPE: &str = "applyset.kubernetes.io/is-parent-type";
    /// On any object: `disabled` keeps it out of every prune.
    pub const PRUNE: &str = "univrs.io/prune";

    /// Labels a tool of the set writes (outside signatures).
    pub const LABELS: [&str; 2] = [ID, PART_OF];
    /// Annotations a tool of the set writes (outside signatures).
    pub const ANNOTATIONS: [&str; 4] =
        [TOOLING, CONTAINS_GROUP_KINDS, ADDITIONAL_NAMESPACES, CONTAINS_GROUP_RESOURCES];

    /// The id of the set whose parent is `name` in `namespace` of `kind` in `group`, as
    /// kubectl computes it: `applyset-` + base64url(sha256("NAME.NAMESPACE.KIND.GROUP")) + `-v1`.
    pub fn id(name: &str, namespace: &str, kind: &str, group: &str) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(format!("{name}.{namespace}.{kind}.{group}").as_bytes());
        format!("applyset-{}-v1", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash))
    }
}

/// The parent of an apply set (kubectl's ApplySet, KEP-3659): its owner's record of a set of
/// objects applied together, so that what leaves the set's source is pruned. The set itself is
/// in its labels and annotations ([`applyset`]), which `ui apply --applyset` and
/// `KUBECTL_APPLYSET=true kubectl apply --applyset=applysets.univrs.io/NAME` both maintain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplySetSpec {
    /// What the set is, for people (at most 1 KiB): a repository and path, say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Validate for ApplySetSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.description.as_ref().is_some_and(|s| s.len() > 1024) {
            errors.push(path.child("description").error("must be at most 1024 bytes"));
        }
    }
}

/// An ApplySet has no status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplySetStatus {}

impl KindSpec for ApplySetSpec {
    type Status = ApplySetStatus;
    const KIND: &'static str = "ApplySet";
    const PLURAL: &'static str = "applysets";
    const SINGULAR: &'static str = "applyset";
    const SHORT_NAMES: &'static [&'static str] = &[];
    const SCOPE: Scope = Scope::Namespaced;
    const SIGNED: bool = true;
    const DESCRIPTION: &'static str = "The parent of an apply set (kubectl's ApplySet): the objects applied together from one source, for prune.";
}

#[cfg(test)]
mod tests {
    use super::applyset;

    #[test]
    fn the_id_is_kubectls() {
        // kubectl's: base64url(sha256("NAME.NAMESPACE.KIND.GROUP")), no padding.
        let id = applyset::id("web", "default", "ApplySet", "univrs.io");
        assert!(id.starts_with("applyset-") && id.ends_with("-v1"), "{id}");
        assert_eq!(id.len(), "applyset-".len() + 43 + "-v1".len());
        assert!(!id.contains('=') && !id.contains('+') && !id.contains('/'));
        assert_ne!(id, applyset::id("web", "other", "ApplySet", "univrs.io"));
        // The same bytes as Python's base64.urlsafe_b64encode(sha256(...)) without padding.
        assert_eq!(id, "applyset-vIB3qqNHtBQiWNbcNwsgtRQSHi_fuNhPtIY4hRon5Wg-v1");
    }
}
