use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NoStatus;
use crate::credits::Credits;
use crate::identity::Did;
use crate::meta::Time;
use crate::object::{KindSpec, Scope};
use crate::validation::{FieldError, FieldPath, Validate, check_dns1123_label};

/// What a user lets an AI agent's key do on their behalf: per verb × kind × namespace,
/// `autonomous`, `approval` or `forbidden` (forbidden unless a rule grants it), until it
/// expires. Signed by the user; the apiserver enforces it for every request the agent's key
/// makes, whatever client it comes through. Objects the agent writes under it are the user's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentGrantSpec {
    /// The agent's key (`ui agent init NAME` makes one). Never the grant's own signer.
    pub agent: Did,
    /// When the grant ends: from then on the agent acts for nobody.
    pub expires: Time,
    /// What the agent may do. Where several rules match a request, the strictest wins
    /// (`forbidden` over `approval` over `autonomous`); where none does, it is forbidden.
    #[serde(default)]
    pub rules: Vec<GrantRule>,
    /// Whether the agent sees the environment values of the user's objects it may read
    /// (`get`, `list`, `watch` granted `autonomous`); otherwise it sees them redacted, as
    /// everyone else does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reveal_env: bool,
    /// Most credits the agent may commit the user to (enforced with the credits ledger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spending_cap: Option<Credits>,
    /// How long a request waiting for the user's approval is kept (60 s to 7 days; default
    /// one hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_ttl_seconds: Option<u32>,
    /// The agent's consent to act for the grant's signer under this grant: its Ed25519
    /// signature (base64) over `univrs.io/agent-acceptance`, the signer's did and the grant's
    /// name, one per line (`ui agent init` writes it; `ui agent accept` makes another). Without
    /// it the grant gives the agent nothing — and nobody can make someone else's key an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance: Option<String>,
}

/// The bytes an agent signs to accept acting for `owner` under the grant `grant`.
pub fn acceptance_message(owner: &str, grant: &str) -> Vec<u8> {
    format!("univrs.io/agent-acceptance\n{owner}\n{grant}").into_bytes()
}

/// An agent's acceptance of acting for `owner` under the grant `grant`, made with its key.
pub fn accept(
    key: &(impl crate::signing::Sign + ?Sized),
    owner: &str,
    grant: &str,
) -> Result<String, String> {
    use base64::Engine as _;
    let signature = key.try_sign(&acceptance_message(owner, grant))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()))
}

/// One boundary: these verbs on these kinds in these namespaces are `mode`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantRule {
    /// The verbs.
    pub verbs: Vec<AgentVerb>,
    /// Kinds (`Workload`, …) or `*` for every kind an agent may be granted but the money
    /// kinds (Transfer, CreditGrant), which a rule must name to grant.
    pub kinds: Vec<String>,
    /// Namespaces or `*` for all of them; cluster-scoped kinds match only `*`.
    pub namespaces: Vec<String>,
    /// What the agent may do there.
    pub mode: GrantMode,
}

/// What an agent may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentVerb {
    /// Read one object.
    Get,
    /// List objects.
    List,
    /// Watch objects.
    Watch,
    /// Create an object.
    Create,
    /// Change an object.
    Update,
    /// Delete an object.
    Delete,
    /// Change only a Workload's `spec.replicas`.
    Scale,
    /// Read a replica's output.
    Logs,
}

impl AgentVerb {
    /// Every verb.
    pub const ALL: [AgentVerb; 8] = [
        AgentVerb::Get,
        AgentVerb::List,
        AgentVerb::Watch,
        AgentVerb::Create,
        AgentVerb::Update,
        AgentVerb::Delete,
        AgentVerb::Scale,
        AgentVerb::Logs,
    ];

    /// The verb as written in a grant.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentVerb::Get => "get",
            AgentVerb::List => "list",
            AgentVerb::Watch => "watch",
            AgentVerb::Create => "create",
            AgentVerb::Update => "update",
            AgentVerb::Delete => "delete",
            AgentVerb::Scale => "scale",
            AgentVerb::Logs => "logs",
        }
    }

    /// Whether it only reads (and so cannot wait for an approval).
    pub fn reads(self) -> bool {
        matches!(self, AgentVerb::Get | AgentVerb::List | AgentVerb::Watch | AgentVerb::Logs)
    }
}

/// How much an agent may do on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GrantMode {
    /// Done at once.
    Autonomous,
    /// Held as an Approval until the user approves or denies it (writes only).
    Approval,
    /// Refused.
    Forbidden,
}

impl GrantMode {
    /// The mode as written in a grant.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantMode::Autonomous => "autonomous",
            GrantMode::Approval => "approval",
            GrantMode::Forbidden => "forbidden",
        }
    }
}

/// Kinds no grant can give an agent a write on: an agent never widens its own grant, never
/// decides an approval and never writes an audit record.
pub const NEVER_GRANTED: [&str; 3] = ["AgentGrant", "Approval", "AuditEvent"];

/// Kinds that move or lend credits: a rule grants them only by name, never through `*`.
pub const NAMED_ONLY: [&str; 2] = ["Transfer", "CreditGrant"];

/// The most rules a grant holds, and kinds or namespaces a rule names.
pub const MAX_RULES: usize = 64;
/// The most kinds or namespaces one rule names.
pub const MAX_RULE_ITEMS: usize = 64;

/// What a grant says about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    /// The mode that applies.
    pub mode: GrantMode,
    /// The index of the rule that decided it (`None`: no rule matched, so forbidden).
    pub rule: Option<usize>,
}

impl AgentGrantSpec {
    /// What this grant says about `verb` on an object of `kind` in `namespace` (`None` for a
    /// cluster-scoped kind). Pure: expiry and who signed are the caller's to check.
    pub fn decide(&self, verb: AgentVerb, kind: &str, namespace: Option<&str>) -> RuleMatch {
        if !verb.reads() && NEVER_GRANTED.contains(&kind) {
            return RuleMatch { mode: GrantMode::Forbidden, rule: None };
        }
        let mut best: Option<RuleMatch> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            let kind_matches =
                rule.kinds.iter().any(|k| k == kind || (k == "*" && !NAMED_ONLY.contains(&kind)));
            let ns_matches = rule.namespaces.iter().any(|n| n == "*" || Some(n.as_str()) == namespace);
            if rule.verbs.contains(&verb) && kind_matches && ns_matches {
                // The strictest matching rule wins, so a `forbidden` carve-out holds wherever it
                // is written.
                if best.as_ref().is_none_or(|b| rule.mode > b.mode) {
                    best = Some(RuleMatch { mode: rule.mode, rule: Some(i) });
                }
            }
        }
        best.unwrap_or(RuleMatch { mode: GrantMode::Forbidden, rule: None })
    }

    /// Whether `spec.acceptance` is the agent's consent to act for `owner` under the grant
    /// named `grant`.
    pub fn accepted_by_agent(&self, owner: &str, grant: &str) -> bool {
        use base64::Engine as _;
        let Some(text) = &self.acceptance else { return false };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text) else { return false };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else { return false };
        self.agent.verifying_key().verify_strict(&acceptance_message(owner, grant), &signature).is_ok()
    }

    /// How long an approval under this grant waits.
    pub fn approval_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.approval_ttl_seconds.unwrap_or(3600).into())
    }
}

impl GrantRule {
    /// The rule in one line, as messages show it.
    pub fn describe(&self) -> String {
        let verbs: Vec<&str> = self.verbs.iter().map(|v| v.as_str()).collect();
        format!(
            "{} {} in {}: {}",
            verbs.join(","),
            self.kinds.join(","),
            self.namespaces.join(","),
            self.mode.as_str()
        )
    }
}

impl Validate for AgentGrantSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.rules.len() > MAX_RULES {
            errors.push(path.child("rules").error(format!("at most {MAX_RULES} rules")));
        }
        if let Some(ttl) = self.approval_ttl_seconds
            && !(60..=7 * 24 * 3600).contains(&ttl)
        {
            errors.push(path.child("approvalTtlSeconds").error("must be between 60 and 604800 (7 days)"));
        }
        if self.spending_cap.is_some_and(Credits::is_negative) {
            errors.push(path.child("spendingCap").error("must be >= 0"));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = path.child("rules").index(i);
            for (field, len) in [
                ("verbs", rule.verbs.len()),
                ("kinds", rule.kinds.len()),
                ("namespaces", rule.namespaces.len()),
            ] {
                if len == 0 {
                    errors.push(
                        at.child(field).error("must name at least one (or `*` for kinds and namespaces)"),
                    );
                }
                if len > MAX_RULE_ITEMS {
                    errors.push(at.child(field).error(format!("at most {MAX_RULE_ITEMS}")));
                }
            }
            for (j, kind) in rule.kinds.iter().enumerate() {
                if kind == "*" {
                    continue;
                }
                if super::by_kind(kind).is_none() {
                    let known: Vec<&str> = super::KINDS.iter().map(|k| k.kind).collect();
                    errors.push(
                        at.child("kinds")
                            .index(j)
                            .error(format!("{kind:?} is not a kind (one of {})", known.join(", "))),
                    );
                } else if NEVER_GRANTED.contains(&kind.as_str()) && rule.verbs.iter().any(|v| !v.reads()) {
                    errors.push(at.child("kinds").index(j).error(format!(
                        "no agent may write {kind} objects: an agent never widens its grant or decides an approval"
                    )));
                }
            }
            for (j, ns) in rule.namespaces.iter().enumerate() {
                if ns != "*"
                    && let Err(e) = check_dns1123_label(ns)
                {
                    errors.push(at.child("namespaces").index(j).error(e));
                }
            }
            if rule.mode == GrantMode::Approval {
                for (j, verb) in rule.verbs.iter().enumerate() {
                    if verb.reads() {
                        errors.push(at.child("verbs").index(j).error(format!(
                            "{} cannot wait for an approval: grant it autonomous or leave it forbidden",
                            verb.as_str()
                        )));
                    }
                }
            }
        }
    }
}

impl KindSpec for AgentGrantSpec {
    type Status = NoStatus;
    const KIND: &'static str = "AgentGrant";
    const PLURAL: &'static str = "agentgrants";
    const SINGULAR: &'static str = "agentgrant";
    const SHORT_NAMES: &'static [&'static str] = &["ag"];
    const SCOPE: Scope = Scope::Cluster;
    const SIGNED: bool = true;
    const DESCRIPTION: &'static str = "What an AI agent's key may do on its user's behalf: per verb, kind and namespace autonomous, approval or forbidden, until it expires.";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[AgentVerb], kinds: &[&str], namespaces: &[&str], mode: GrantMode) -> GrantRule {
        GrantRule {
            verbs: verbs.to_vec(),
            kinds: kinds.iter().map(|s| s.to_string()).collect(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            mode,
        }
    }

    fn grant(rules: Vec<GrantRule>) -> AgentGrantSpec {
        AgentGrantSpec {
            agent: Did::from_key(&ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key()),
            expires: Time(chrono::DateTime::from_timestamp(2_000_000_000, 0).unwrap()),
            rules,
            reveal_env: false,
            spending_cap: None,
            approval_ttl_seconds: None,
            acceptance: None,
        }
    }

    #[test]
    fn the_strictest_matching_rule_decides_and_nothing_is_granted_unless_written() {
        use AgentVerb::*;
        use GrantMode::*;
        let g = grant(vec![
            rule(&[Create, Update, Get], &["*"], &["*"], Autonomous),
            rule(&[Delete], &["Workload"], &["default"], Approval),
            rule(&[Create], &["Workload"], &["prod"], Forbidden),
        ]);
        type Case<'a> = (AgentVerb, &'a str, Option<&'a str>, GrantMode, Option<usize>);
        let cases: &[Case<'_>] = &[
            (Create, "Workload", Some("default"), Autonomous, Some(0)),
            (Create, "Workload", Some("prod"), Forbidden, Some(2)),
            (Update, "Workload", Some("prod"), Autonomous, Some(0)),
            (Delete, "Workload", Some("default"), Approval, Some(1)),
            (Delete, "Workload", Some("other"), Forbidden, None),
            (Delete, "TrustPolicy", Some("default"), Forbidden, None),
            (Scale, "Workload", Some("default"), Forbidden, None),
            // `*` never reaches the money kinds: they are granted by name.
            (Create, "CreditGrant", None, Forbidden, None),
            (Get, "Node", None, Autonomous, Some(0)),
            // `*` never reaches the grants and approvals themselves.
            (Create, "AgentGrant", None, Forbidden, None),
            (Update, "Approval", None, Forbidden, None),
            (Get, "AgentGrant", None, Autonomous, Some(0)),
        ];
        for (verb, kind, ns, mode, rule) in cases {
            assert_eq!(
                g.decide(*verb, kind, *ns),
                RuleMatch { mode: *mode, rule: *rule },
                "{verb:?} {kind} {ns:?}"
            );
        }
    }

    #[test]
    fn cluster_scoped_kinds_match_only_every_namespace() {
        let g =
            grant(vec![rule(&[AgentVerb::Create], &["CreditGrant"], &["default"], GrantMode::Autonomous)]);
        assert_eq!(g.decide(AgentVerb::Create, "CreditGrant", None).mode, GrantMode::Forbidden);
    }

    #[test]
    fn validation_names_each_bad_rule_field() {
        use AgentVerb::*;
        let g = grant(vec![
            rule(&[Get], &["Pod"], &["Default"], GrantMode::Autonomous),
            rule(&[Logs], &["Workload"], &["*"], GrantMode::Approval),
            rule(&[Update], &["AgentGrant"], &["*"], GrantMode::Autonomous),
            rule(&[], &[], &["*"], GrantMode::Autonomous),
        ]);
        let mut errors = Vec::new();
        g.validate(&FieldPath::root().child("spec"), &mut errors);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.rules[0].kinds[0]",
                "spec.rules[0].namespaces[0]",
                "spec.rules[1].verbs[0]",
                "spec.rules[2].kinds[0]",
                "spec.rules[3].verbs",
                "spec.rules[3].kinds",
            ],
            "{errors:?}"
        );
    }
}
