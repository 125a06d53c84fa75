use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Probe;
use crate::identity::Jurisdiction;
use crate::meta::{Condition, Time};
use crate::object::{KindSpec, Scope};
use crate::quantity::Resources;
use crate::validation::{
    FieldError, FieldPath, Validate, check_dns1123_subdomain, check_label_value, check_qualified_name,
};

/// Most replicas one Workload may ask for.
pub const MAX_REPLICAS: i32 = 10_000;

/// What a user wants run: a container image or rootfs, how many copies, under which policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// How many copies to run (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// An OCI image reference. Exactly one of `image` and `rootfs` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A root filesystem (directory or OCI image layout) prepared on the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    /// The program to run and its arguments (the image's entrypoint when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments appended to `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables; secret values are sealed with age to the allowed nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Resources each replica needs (reserved on the node and enforced as limits).
    #[serde(default)]
    pub resources: Resources,
    /// What to do when a replica's process exits (default `Always`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Name of the TrustPolicy, in the same namespace, whose hard constraints placement obeys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_policy: Option<String>,
    /// Further placement constraints of this workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Restarts a replica whose probe fails `failureThreshold` times in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// A replica is ready (and counts towards availability) only while this probe passes;
    /// without one, as soon as it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// The ports the container serves on; a `hostPort` publishes one on the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

/// Most ports one workload may list.
pub const MAX_PORTS: usize = 64;

/// A port the container serves on, as Kubernetes' `containerPort`. With `hostPort`, the node
/// publishes it: connections to that port on the node reach the replica's `containerPort`.
/// Two replicas that publish the same host port and protocol never share a node (a scheduling
/// constraint, never a failure at start).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    /// A name for the port (an IANA service name: at most 15 lowercase letters, digits and
    /// '-'), unique in the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port the container listens on (1-65535).
    pub container_port: u16,
    /// The node's port that publishes it (1-65535; none: not published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A port's protocol.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Protocol {
    /// TCP.
    #[default]
    TCP,
    /// UDP.
    UDP,
}

impl Protocol {
    /// `TCP` or `UDP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TCP => "TCP",
            Self::UDP => "UDP",
        }
    }
}

impl ContainerPort {
    /// The published port as people read it: `8080→80/TCP`, or `80/TCP` when not published.
    pub fn describe(&self) -> String {
        match self.host_port {
            Some(h) => format!("{h}→{}/{}", self.container_port, self.protocol.as_str()),
            None => format!("{}/{}", self.container_port, self.protocol.as_str()),
        }
    }
}

/// The host ports (with their protocols) a container publishes.
pub fn host_ports(ports: &[ContainerPort]) -> impl Iterator<Item = (u16, Protocol)> + '_ {
    ports.iter().filter_map(|p| p.host_port.map(|h| (h, p.protocol)))
}

/// One environment variable: a plain `value`, or a `sealed` age ciphertext.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Plain value, visible to the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// ASCII-armored age ciphertext; only the admitted nodes and the owner can open it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// Marks the value as secret: `ui seal` seals it, and a secret `value` never leaves the
    /// machine (a manifest with one is refused until it is sealed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// When a replica's process is restarted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    /// Restart whenever it exits.
    #[default]
    Always,
    /// Restart only after a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

/// Per-workload placement constraints (hard, like the TrustPolicy's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// Labels a node's offer must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Jurisdictions the replicas may run in (empty: any the TrustPolicy allows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jurisdictions: Vec<Jurisdiction>,
    /// At most this many replicas on nodes of one operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_operator: Option<u32>,
}

/// What one replica runs: the part of a Workload copied into each Replica.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSpec {
    /// An OCI image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A root filesystem prepared on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    /// The program and its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments appended to `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Resources reserved and enforced.
    #[serde(default)]
    pub resources: Resources,
    /// What to do when the process exits.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Restarts the replica when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Whether the replica is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// The ports it serves on, and those the node publishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

impl WorkloadSpec {
    /// The number of replicas asked for (default 1).
    pub fn replicas(&self) -> i32 {
        self.replicas.unwrap_or(1)
    }

    /// What each replica runs, defaults applied.
    pub fn container(&self) -> ContainerSpec {
        ContainerSpec {
            image: self.image.clone(),
            rootfs: self.rootfs.clone(),
            command: self.command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            resources: self.resources.clone(),
            restart_policy: self.restart_policy.unwrap_or_default(),
            liveness_probe: self.liveness_probe.clone(),
            readiness_probe: self.readiness_probe.clone(),
            ports: self.ports.clone(),
        }
    }
}

impl Validate for WorkloadSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Some(n) = self.replicas
            && !(0..=MAX_REPLICAS).contains(&n)
        {
            let msg = if n < 0 { "must be >= 0".to_owned() } else { format!("must be <= {MAX_REPLICAS}") };
            errors.push(path.child("replicas").error(msg));
        }
        self.container().validate(path, errors);
        if let Some(tp) = &self.trust_policy
            && let Err(e) = check_dns1123_subdomain(tp)
        {
            errors.push(path.child("trustPolicy").error(e));
        }
        self.placement.validate(&path.child("placement"), errors);
    }
}

impl Validate for ContainerSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        match (&self.image, &self.rootfs) {
            (None, None) => errors.push(path.child("image").error("required: set image or rootfs")),
            (Some(_), Some(_)) => errors.push(path.child("rootfs").error("set image or rootfs, not both")),
            (Some(s), None) | (None, Some(s)) if s.trim().is_empty() => {
                let field = if self.image.is_some() { "image" } else { "rootfs" };
                errors.push(path.child(field).error("must not be empty"));
            }
            (Some(image), None) => {
                if let Err(e) = check_image_reference(image) {
                    errors.push(path.child("image").error(e));
                }
            }
            _ => {}
        }
        let mut seen = BTreeSet::new();
        for (i, var) in self.env.iter().enumerate() {
            let p = path.child("env").index(i);
            let valid_name = var.name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && var.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                errors.push(p.child("name").error(format!(
                    "{:?} is not a valid variable name: use letters, digits and '_', not starting with a digit",
                    var.name
                )));
            } else if !seen.insert(var.name.as_str()) {
                errors.push(p.child("name").error(format!("duplicate variable {:?}", var.name)));
            }
            match (&var.value, &var.sealed) {
                (Some(_), Some(_)) => errors.push(p.child("sealed").error("set value or sealed, not both")),
                (None, None) => errors.push(p.child("value").error("required: set value or sealed")),
                (Some(_), None) if var.secret => errors.push(p.child("value").error(
                    "marked secret but not sealed: run `ui seal -f FILE` first (a secret value is never sent)",
                )),
                (None, Some(s)) if !s.trim_start().starts_with("-----BEGIN AGE ENCRYPTED FILE-----") => {
                    errors.push(
                        p.child("sealed")
                            .error("must be an ASCII-armored age ciphertext (ui seal makes one)"),
                    )
                }
                _ => {}
            }
        }
        self.resources.validate(&path.child("resources"), errors);
        if let Some(p) = &self.liveness_probe {
            p.validate_as(&path.child("livenessProbe"), true, errors);
        }
        if let Some(p) = &self.readiness_probe {
            p.validate_as(&path.child("readinessProbe"), false, errors);
        }
        validate_ports(&self.ports, &path.child("ports"), errors);
    }
}

/// Whether `s` is an image reference as docker writes them: `[REGISTRY[:PORT]/]PATH[:TAG][@DIGEST]`,
/// the path of lowercase components (`[a-z0-9]` runs joined by `.`, `_`, `__` or dashes) split
/// by `/`, a tag of at most 128 word characters, dots and dashes, a `sha256:` digest of 64 hex
/// digits; at most 512 characters.
pub fn check_image_reference(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{s:?} is not an image reference: {why}"));
    if s.len() > 512 {
        return Err("an image reference has at most 512 characters".to_owned());
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            return bad("a digest is sha256: and 64 lowercase hex digits");
        }
    }
    // A tag is after the last ':' that comes after the last '/' (a registry's port is before).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return bad(
                "a tag is at most 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
            );
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    let is_registry = parts.len() > 1 && (first.contains(['.', ':']) || first == "localhost");
    if is_registry {
        let (host, port) = match first.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        let host_ok =
            !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        if !host_ok
            || port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.chars().all(|c| c.is_ascii_digit()))
        {
            return bad("the registry is HOST or HOST:PORT");
        }
        parts.remove(0);
    }
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
            && b[b.len() - 1].is_ascii_lowercase() | b[b.len() - 1].is_ascii_digit()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-'))
            && !c.contains("..")
            && !c.contains("___")
            && !c.contains("._")
            && !c.contains("_.")
    };
    if parts.is_empty() || !parts.iter().all(|c| component_ok(c)) {
        return bad(
            "the repository is lowercase letters and digits, joined by '.', '_' or '-', in parts split by '/'",
        );
    }
    Ok(())
}

fn validate_ports(ports: &[ContainerPort], path: &FieldPath, errors: &mut Vec<FieldError>) {
    if ports.len() > MAX_PORTS {
        errors.push(path.error(format!("at most {MAX_PORTS} ports, not {}", ports.len())));
        return;
    }
    let (mut names, mut published, mut served) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        if port.container_port == 0 {
            errors.push(p.child("containerPort").error("must be between 1 and 65535"));
        } else if !served.insert((port.container_port, port.protocol)) {
            errors.push(p.child("containerPort").error(format!(
                "duplicate port {}/{}",
                port.container_port,
                port.protocol.as_str()
            )));
        }
        match port.host_port {
            Some(0) => errors.push(p.child("hostPort").error("must be between 1 and 65535")),
            Some(h) if !published.insert((h, port.protocol)) => errors.push(
                p.child("hostPort")
                    .error(format!("host port {h}/{} is published twice", port.protocol.as_str())),
            ),
            _ => {}
        }
        if let Some(name) = &port.name {
            let valid = !name.is_empty()
                && name.len() <= 15
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && name.chars().any(|c| c.is_ascii_lowercase())
                && !name.starts_with('-')
                && !name.ends_with('-')
                && !name.contains("--");
            if !valid {
                errors.push(p.child("name").error(format!(
                    "{name:?} is not a port name: at most 15 lowercase letters, digits and single '-', with a letter"
                )));
            } else if !names.insert(name.as_str()) {
                errors.push(p.child("name").error(format!("duplicate port name {name:?}")));
            }
        }
    }
}

impl Validate for Placement {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        for (k, v) in &self.node_selector {
            if let Err(e) = check_qualified_name(k).and_then(|()| check_label_value(v)) {
                errors.push(path.child("nodeSelector").key(k).error(e));
            }
        }
        if self.max_replicas_per_operator == Some(0) {
            errors.push(path.child("maxReplicasPerOperator").error("must be >= 1"));
        }
    }
}

/// Types of Workload conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadConditionType {
    /// Enough replicas are running.
    Available,
    /// A rollout is under way.
    Progressing,
    /// A replica could not be created or placed.
    ReplicaFailure,
}

/// What the workload controller observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replicas that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Replicas that are running.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Replicas already on the current spec.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition<WorkloadConditionType>>,
    /// When the status was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
}

impl KindSpec for WorkloadSpec {
    type Status = WorkloadStatus;
    const KIND: &'static str = "Workload";
    const PLURAL: &'static str = "workloads";
    const SINGULAR: &'static str = "workload";
    const SHORT_NAMES: &'static [&'static str] = &["wl"];
    const SCOPE: Scope = Scope::Namespaced;
    const SIGNED: bool = true;
    const DESCRIPTION: &'static str =
        "A user's signed request to run replicas of a container under a trust policy.";
    const CATEGORIES: &'static [&'static str] =
        &[crate::object::CATEGORY_ALL, crate::object::CATEGORY_UNIVRS];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_checked_as_docker_writes_them() {
        let d = format!("sha256:{}", "a".repeat(64));
        for ok in [
            "busybox".to_owned(),
            "busybox:1.36".to_owned(),
            "me/app".to_owned(),
            "127.0.0.1:5000/web:1".to_owned(),
            "localhost/web".to_owned(),
            "ghcr.io/o/r/sub:v2".to_owned(),
            format!("registry.example/web@{d}"),
            format!("web:1@{d}"),
            "a_b__c/x-y".to_owned(),
        ] {
            assert_eq!(check_image_reference(&ok), Ok(()), "{ok}");
        }
        for bad in [
            "web/UPPER",
            "web:",
            "web@sha256:short",
            "a b",
            ":tag",
            "web/",
            "/web",
            "web:-x",
            "host:99999999/web",
        ] {
            assert!(check_image_reference(bad).is_err(), "{bad:?}");
        }
        assert!(check_image_reference(&"x".repeat(600)).unwrap_err().contains("512"));
        // Named where it is: spec.image.
        let mut errors = Vec::new();
        let w = WorkloadSpec { image: Some("Web:latest".into()), ..Default::default() };
        w.validate(&FieldPath::root(), &mut errors);
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("image") && e.to_string().contains("not an image reference")),
            "{errors:?}"
        );
    }

    #[test]
    fn ports_are_bounded_unique_and_named_well() {
        let p = |c: u16, h: Option<u16>, name: Option<&str>| ContainerPort {
            name: name.map(str::to_owned),
            container_port: c,
            host_port: h,
            protocol: Protocol::TCP,
        };
        let check = |ports: Vec<ContainerPort>| {
            let mut errors = Vec::new();
            validate_ports(&ports, &FieldPath::root().child("ports"), &mut errors);
            errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        };
        assert_eq!(check(vec![p(80, Some(8080), Some("http")), p(443, None, None)]), "");
        assert!(check(vec![p(0, None, None)]).contains("ports[0].containerPort"));
        assert!(check(vec![p(80, Some(1), None), p(81, Some(1), None)]).contains("published twice"));
        assert!(check(vec![p(80, None, None), p(80, None, None)]).contains("duplicate port 80/TCP"));
        assert!(check(vec![p(80, None, Some("HTTP"))]).contains("not a port name"));
        assert!(check((1..=65).map(|i| p(i, None, None)).collect()).contains("at most 64"));
    }
}
