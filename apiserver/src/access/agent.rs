//! An AI agent's key acting on its user's behalf, within the AgentGrant the user signed.
//!
//! A grant only ever *adds* to what the agent's key may do as any key: it lets the agent
//! write the granting user's objects (verb × kind × namespace: `autonomous`, held for
//! `approval`, or `forbidden`, which is also what no rule means), read their output and, if it
//! says so, their environment values. It takes nothing away from the key, so naming someone's
//! key in a grant changes nothing for them (any key is a user). A grant counts only for the
//! objects of its own signer: a stranger's grant never reaches your objects.
//!
//! An object the agent writes is signed with the agent's key on the user's behalf
//! (`univrs.io/signer` = the user, `univrs.io/agent` = the agent, `univrs.io/grant` = the
//! grant; see `api::signing::sign_on_behalf`), so it is the user's object — the user reads,
//! changes and deletes it — and its signature shows which agent wrote it under which grant.
//!
//! Everything here is decided from the request and the grants, without I/O; the registry
//! feeds the grants naming the caller ([`super::Lookup::grants`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::kinds::{AgentGrantSpec, AgentVerb, GrantMode, NEVER_GRANTED};
use api::{KindInfo, Scope};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Caller, Lookup, signer};

/// The apply-set label of an object, as a JSON pointer.
const PART_OF: &str = "/metadata/labels/applyset.kubernetes.io~1part-of";

/// A stored AgentGrant, as the rules need it.
#[derive(Clone, Debug, PartialEq)]
pub struct GrantFacts {
    /// Its name.
    pub name: String,
    /// Its signer: the user whose objects it covers.
    pub owner: String,
    /// What it says.
    pub spec: AgentGrantSpec,
}

/// The grant a request was decided on, for its audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantUse {
    /// The user who signed it.
    pub owner: String,
    /// Its name.
    pub grant: String,
}

/// Where the rules note the grant that decided a request (shared by the clones of one
/// request's [`Caller`]), so that the request's audit record can name it.
#[derive(Clone, Debug, Default)]
pub struct Trail(Arc<Mutex<Option<GrantUse>>>);

impl Trail {
    /// Notes `used`, unless a grant was noted already.
    pub fn note(&self, used: GrantUse) {
        let mut slot = self.0.lock().expect("trail lock");
        slot.get_or_insert(used);
    }

    /// The grant noted, if any.
    pub fn used(&self) -> Option<GrantUse> {
        self.0.lock().expect("trail lock").clone()
    }
}

// A trail is bookkeeping of one request, not part of who the caller is.
impl PartialEq for Trail {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Trail {}

/// A write the grant holds for its owner's approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The agent.
    pub agent: String,
    /// The user who decides.
    pub owner: String,
    /// The grant.
    pub grant: String,
    /// The rule that asks for approval, in one line.
    pub rule: String,
    /// What the request does.
    pub verb: AgentVerb,
    /// How long the approval waits.
    pub ttl: Duration,
}

/// What the grants decide about one request of an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Done on the owner's behalf.
    Allow(GrantUse),
    /// Held for the owner's approval.
    Hold(Hold),
    /// Refused, and why (naming the rule and how the owner can change it).
    Refuse(String),
}

fn where_(kind: &KindInfo, namespace: Option<&str>) -> String {
    match (kind.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => format!("{} in namespace {ns}", kind.plural),
        _ => kind.plural.to_owned(),
    }
}

/// What the grants of `owner` naming `agent` decide about `verb` on an object of `kind` in
/// `namespace`; `named` is the grant an agent-signed object names (only that one counts then).
/// `None`: no grant of `owner` names the agent at all, so the grants have nothing to say (the
/// ordinary rules refuse the request).
#[allow(clippy::too_many_arguments)]
pub fn decide(
    agent: &str,
    owner: &str,
    named: Option<&str>,
    verb: AgentVerb,
    kind: &KindInfo,
    namespace: Option<&str>,
    grants: &[Arc<GrantFacts>],
    approved: bool,
    now: DateTime<Utc>,
) -> Option<Decision> {
    let namespace = if kind.scope == Scope::Namespaced { namespace } else { None };
    let what = format!("{} {}", verb.as_str(), where_(kind, namespace));
    let candidates: Vec<&GrantFacts> = grants
        .iter()
        .map(|g| &**g)
        .filter(|g| g.owner == owner && g.spec.agent.as_str() == agent)
        .filter(|g| named.is_none_or(|n| n == g.name))
        .collect();
    if candidates.is_empty() {
        let named = named?;
        let others: Vec<String> = grants
            .iter()
            .filter(|g| g.name == named)
            .map(|g| format!("{named:?} is signed by {}", g.owner))
            .collect();
        let others = if others.is_empty() { String::new() } else { format!(" ({})", others.join(", ")) };
        return Some(Decision::Refuse(format!(
            "{agent} may not {what} on {owner}'s behalf: {owner} signed no AgentGrant {named:?} naming this agent{others}; a grant counts only for the objects of its own signer"
        )));
    }
    if NEVER_GRANTED.contains(&kind.kind) && !verb.reads() {
        return Some(Decision::Refuse(format!(
            "{agent} may not {what}: an agent never writes {} objects (its grants, approvals and audit), whatever a grant says",
            kind.kind
        )));
    }
    let in_force: Vec<&GrantFacts> = candidates.iter().copied().filter(|g| g.spec.expires.0 > now).collect();
    if in_force.is_empty() {
        let g = candidates[0];
        return Some(Decision::Refuse(format!(
            "{agent} may not {what} on {owner}'s behalf: AgentGrant {:?} expired at {}, so the agent acts for {owner} no more; {owner} can sign the grant again with a later spec.expires (ui apply -f GRANT.yaml)",
            g.name, g.spec.expires
        )));
    }
    // Each grant in force stands on its own: the most any of them allows is allowed.
    let (grant, found) = in_force
        .iter()
        .map(|g| (*g, g.spec.decide(verb, kind.kind, namespace)))
        .min_by_key(|(_, m)| m.mode)
        .expect("at least one grant in force");
    let used = GrantUse { owner: owner.to_owned(), grant: grant.name.clone() };
    match found.mode {
        GrantMode::Autonomous => Some(Decision::Allow(used)),
        GrantMode::Approval if approved => Some(Decision::Allow(used)),
        GrantMode::Approval => {
            let i = found.rule.expect("approval comes from a rule");
            Some(Decision::Hold(Hold {
                agent: agent.to_owned(),
                owner: owner.to_owned(),
                grant: grant.name.clone(),
                rule: format!("spec.rules[{i}] ({})", grant.spec.rules[i].describe()),
                verb,
                ttl: grant.spec.approval_ttl(),
            }))
        }
        GrantMode::Forbidden => Some(Decision::Refuse(match found.rule {
            Some(i) => format!(
                "{agent} may not {what} on {owner}'s behalf: rule spec.rules[{i}] ({}) of AgentGrant {:?} forbids it; {owner} can change that rule and apply the grant again (ui apply -f GRANT.yaml)",
                grant.spec.rules[i].describe(),
                grant.name
            ),
            None => format!(
                "{agent} may not {what} on {owner}'s behalf: no rule of AgentGrant {:?} grants it (forbidden unless granted); {owner} can add a rule {{verbs: [{}], kinds: [{}], namespaces: [{}], mode: autonomous}} (or mode: approval) and apply the grant again (ui apply -f GRANT.yaml)",
                grant.name,
                verb.as_str(),
                kind.kind,
                namespace.unwrap_or("\"*\""),
            ),
        })),
    }
}

/// The annotation of an agent's signature naming the agent, and the one naming the grant.
fn agent_annotations(obj: &Value) -> (Option<&str>, Option<&str>) {
    let ann = obj.pointer("/metadata/annotations");
    let get = |k: &str| ann.and_then(|a| a.get(k)).and_then(Value::as_str);
    (get(api::signing::AGENT), get(api::signing::GRANT))
}

/// Whether `new` differs from `old` only in `spec.replicas` and its signature: a scale.
pub fn only_replicas_changed(old: &Value, new: &Value) -> bool {
    let strip = |o: &Value| {
        let mut a = api::signing::authored(o).ok()?;
        a.get_mut("spec").and_then(Value::as_object_mut).map(|s| s.remove("replicas"));
        if let Some(ann) = a.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
            for k in
                [api::signing::SIGNATURE, api::signing::SIGNED_AT, api::signing::AGENT, api::signing::GRANT]
            {
                ann.remove(k);
            }
            if ann.is_empty() {
                a["metadata"].as_object_mut().map(|m| m.remove("annotations"));
            }
        }
        Some(a)
    };
    old.pointer("/spec/replicas") != new.pointer("/spec/replicas")
        && strip(old).is_some()
        && strip(old) == strip(new)
}

/// A write by `who`, who holds no role of its own towards the object: what the grants of the
/// object's owner decide (`None`: no grant has a say, the ordinary refusal stands).
pub(super) fn write(
    who: &Caller,
    verb: super::Verb,
    kind: &KindInfo,
    old: Option<&Value>,
    new: Option<&Value>,
    lookup: &dyn Lookup,
    now: DateTime<Utc>,
) -> Option<Decision> {
    let me = who.did.as_ref()?.as_str();
    if !kind.signed {
        return None;
    }
    let obj = new.or(old)?;
    let owner = signer(obj)?;
    let (agent, named) = new.map(agent_annotations).unwrap_or_default();
    if let Some(agent) = agent
        && agent != me
    {
        return Some(Decision::Refuse(format!(
            "{me} may not write this {}: it is signed by the agent {agent}, not by you (sign it with your own key)",
            kind.kind
        )));
    }
    let verb = match verb {
        super::Verb::Create => AgentVerb::Create,
        super::Verb::Delete => AgentVerb::Delete,
        super::Verb::Update => match (old, new) {
            (Some(o), Some(n)) if kind.kind == "Workload" && only_replicas_changed(o, n) => AgentVerb::Scale,
            _ => AgentVerb::Update,
        },
        // The status is the control plane's and the nodes': no grant gives it to an agent.
        super::Verb::UpdateStatus => return None,
    };
    let namespace = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    let grants = lookup.grants(me);
    let mut decision = decide(me, owner, named, verb, kind, namespace, &grants, who.approved, now)?;
    if !matches!(decision, Decision::Refuse(_)) {
        // What an agent writes is its own signed writing on the user's behalf: never the
        // user's object sent back as it is (that would put the user's signature on the
        // agent's act, and a write's answer on values the agent may not read).
        if new.is_some() && agent.is_none() {
            decision = Decision::Refuse(format!(
                "{me} may not {} this {} as it is: an agent writes only what it signed on {owner}'s behalf (univrs.io/agent and univrs.io/grant, as `ui` and `ui mcp` sign in an agent's directory)",
                verb.as_str(),
                kind.kind
            ));
        } else if let (Some(o), Some(n)) = (old, new)
            && (o.pointer("/metadata/ownerReferences") != n.pointer("/metadata/ownerReferences")
                || o.pointer("/metadata/finalizers") != n.pointer("/metadata/finalizers")
                || o.pointer(PART_OF) != n.pointer(PART_OF))
        {
            // Owner references, finalizers and the apply-set label decide when an object is
            // deleted (by the garbage collector, or by the next prune of a set it is put in):
            // changing them needs the grant's delete, on the agent's own.
            let deletes = decide(me, owner, named, AgentVerb::Delete, kind, namespace, &grants, false, now);
            if !matches!(deletes, Some(Decision::Allow(_))) {
                decision = Decision::Refuse(format!(
                    "{me} may not change the ownerReferences, finalizers or apply-set label of this {}: they decide when it is deleted, so that needs delete granted autonomous in {owner}'s AgentGrant",
                    kind.kind
                ));
            }
        }
    }
    match &decision {
        Decision::Allow(used) => who.trail.note(used.clone()),
        Decision::Hold(h) => who.trail.note(GrantUse { owner: h.owner.clone(), grant: h.grant.clone() }),
        Decision::Refuse(_) => {
            if let Some(g) = grants.iter().find(|g| g.owner == owner) {
                who.trail.note(GrantUse { owner: owner.to_owned(), grant: g.name.clone() });
            }
        }
    }
    Some(decision)
}

/// Before any work on a stored object: whether the grants could let `who` change (`update`
/// or `scale`) or delete it at all.
pub(super) fn may_attempt(
    who: &Caller,
    verb: super::Verb,
    kind: &KindInfo,
    old: &Value,
    lookup: &dyn Lookup,
    now: DateTime<Utc>,
) -> Option<Result<(), String>> {
    let me = who.did.as_ref()?.as_str();
    if !kind.signed {
        return None;
    }
    let owner = signer(old)?;
    let namespace = old.pointer("/metadata/namespace").and_then(Value::as_str);
    let grants = lookup.grants(me);
    let verbs: &[AgentVerb] = match verb {
        super::Verb::Update => &[AgentVerb::Update, AgentVerb::Scale],
        super::Verb::Delete => &[AgentVerb::Delete],
        super::Verb::Create | super::Verb::UpdateStatus => return None,
    };
    let mut refusal = None;
    for &v in verbs {
        match decide(me, owner, None, v, kind, namespace, &grants, who.approved, now)? {
            Decision::Allow(_) | Decision::Hold(_) => return Some(Ok(())),
            Decision::Refuse(why) => {
                refusal.get_or_insert(why);
            }
        }
    }
    refusal.map(Err)
}

/// Whether the grants of `obj`'s owner let `who` see its environment values (`get` granted
/// autonomous, and `revealEnv`).
pub(super) fn reveals(
    who: &Caller,
    kind: &KindInfo,
    obj: &Value,
    lookup: &dyn Lookup,
    now: DateTime<Utc>,
) -> bool {
    let Some(me) = who.did.as_ref().map(|d| d.as_str()) else { return false };
    let Some(owner) = signer(obj) else { return false };
    let namespace = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    let grants = lookup.grants(me);
    let revealing: Vec<Arc<GrantFacts>> = grants.iter().filter(|g| g.spec.reveal_env).cloned().collect();
    match decide(me, owner, None, AgentVerb::Get, kind, namespace, &revealing, false, now) {
        Some(Decision::Allow(used)) => {
            who.trail.note(used);
            true
        }
        _ => false,
    }
}

/// Whether the grants of `owner` let `who` read the output of `owner`'s replicas in
/// `namespace` (`logs` on Workload), and if not, why.
pub fn may_read_logs(
    who: &Caller,
    owner: &str,
    namespace: &str,
    lookup: &dyn Lookup,
    now: DateTime<Utc>,
) -> Option<Result<(), String>> {
    let me = who.did.as_ref()?.as_str();
    let kind = api::kinds::info::<api::kinds::WorkloadSpec>();
    let grants = lookup.grants(me);
    match decide(me, owner, None, AgentVerb::Logs, kind, Some(namespace), &grants, false, now)? {
        Decision::Allow(used) => {
            who.trail.note(used);
            Some(Ok(()))
        }
        Decision::Hold(_) => Some(Err("logs cannot wait for an approval".into())),
        Decision::Refuse(why) => {
            if let Some(g) = grants.iter().find(|g| g.owner == owner) {
                who.trail.note(GrantUse { owner: owner.to_owned(), grant: g.name.clone() });
            }
            Some(Err(why))
        }
    }
}
