use proptest::prelude::*;

use super::*;

const GI: u64 = 1 << 30;

fn node(name: &str, operator: &str, jurisdiction: &str) -> Candidate {
    Candidate {
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        operator: operator.to_owned(),
        operator_is_member: false,
        ready: true,
        unschedulable: false,
        offer: Some(Offer {
            jurisdiction: jurisdiction.to_owned(),
            labels: BTreeMap::new(),
            rates: Rates::default(),
            host_ports: (30_000, 32_767),
        }),
        capacity: Amount { cpu: 4000, memory: 8 * GI, storage: 100 * GI },
        used: Amount::default(),
        node_reputation: 0.5,
        operator_reputation: 0.5,
        attesters: Arc::default(),
        ports_taken: BTreeSet::new(),
    }
}

/// Attesters of whom only the control-plane members (`m…`) and those with a reputation in
/// `reputed` have standing of their own.
fn attested_by(dids: &[&str], reputed: &[(&str, f64)]) -> Arc<Attesters> {
    let reputation = |a: &str| reputed.iter().find(|(d, _)| *d == a).map_or(0.0, |(_, r)| *r);
    Arc::new(Attesters::new(dids.iter().copied(), |a| a.starts_with('m'), reputation))
}

/// A TrustPolicy that constrains nothing.
fn anyone() -> Policy {
    Policy::default()
}

fn need() -> Amount {
    Amount { cpu: 500, memory: GI, storage: 0 }
}

/// No credit anywhere (nothing priced in these tests needs any).
fn no_money() -> &'static Money {
    Box::leak(Box::default())
}

fn no_avoid() -> &'static BTreeSet<String> {
    Box::leak(Box::default())
}

fn request<'a>(policy: Option<&'a Policy>, k: &'a Constraints, per: &'a HashMap<String, u32>) -> Request<'a> {
    Request {
        need: need(),
        policy,
        signer: Some("alice"),
        constraints: k,
        per_operator: per,
        money: no_money(),
        avoid: no_avoid(),
    }
}

#[test]
fn each_filter_rejects_for_its_reason() {
    let k = Constraints::default();
    let per = HashMap::new();
    let policy = Policy {
        min_reputation: Some(0.4),
        allowed_operators: ["a", "b", "d"].map(String::from).into(),
        denied_operators: ["b"].map(String::from).into(),
        required_attestations: 1,
        allowed_jurisdictions: ["DE"].map(String::from).into(),
        ..Policy::default()
    };
    let r = request(Some(&policy), &k, &per);
    let mut ok = node("ok", "a", "DE");
    ok.attesters = attested_by(&["m1"], &[]);
    assert_eq!(filter(&ok, &r), Ok(()));
    let cases: Vec<(Candidate, Reason)> = vec![
        (Candidate { ready: false, ..ok.clone() }, Reason::NotReady),
        (Candidate { unschedulable: true, ..ok.clone() }, Reason::Unschedulable),
        (Candidate { offer: None, ..ok.clone() }, Reason::NoOffer),
        (Candidate { operator: "c".into(), ..ok.clone() }, Reason::OperatorNotAllowed),
        (Candidate { operator: "b".into(), ..ok.clone() }, Reason::OperatorDenied),
        (Candidate { operator_reputation: 0.0, ..ok.clone() }, Reason::ReputationTooLow),
        (Candidate { node_reputation: 0.39, ..ok.clone() }, Reason::ReputationTooLow),
        (Candidate { attesters: Arc::default(), ..ok.clone() }, Reason::TooFewAttestations),
        (node("x", "a", "FR"), Reason::TooFewAttestations),
        (
            Candidate { attesters: attested_by(&["m1"], &[]), ..node("x", "a", "FR") },
            Reason::JurisdictionNotAllowed,
        ),
        (
            Candidate { used: Amount { cpu: 3600, ..Amount::default() }, ..ok.clone() },
            Reason::InsufficientCpu,
        ),
        (
            Candidate { used: Amount { memory: 7 * GI + 1, ..Amount::default() }, ..ok.clone() },
            Reason::InsufficientMemory,
        ),
    ];
    for (c, reason) in cases {
        assert_eq!(filter(&c, &r), Err(reason), "{c:?}");
    }
}

#[test]
fn workload_constraints_are_hard_too() {
    let per: HashMap<String, u32> = [("a".to_owned(), 2)].into();
    let k = Constraints {
        node_selector: [("disk".to_owned(), "ssd".to_owned())].into(),
        jurisdictions: ["DE"].map(String::from).into(),
        max_per_operator: Some(2),
        host_ports: [(30_080, Protocol::TCP)].into(),
    };
    let policy = anyone();
    let r = request(Some(&policy), &k, &per);
    let mut n = node("n", "b", "DE");
    assert_eq!(filter(&n, &r), Err(Reason::NodeSelectorMismatch));
    n.offer.as_mut().unwrap().labels.insert("disk".into(), "ssd".into());
    assert_eq!(filter(&n, &r), Ok(()));
    // A host port it publishes, taken on the node: for that protocol only.
    n.ports_taken.insert((30_080, Protocol::UDP));
    assert_eq!(filter(&n, &r), Ok(()));
    n.ports_taken.insert((30_080, Protocol::TCP));
    assert_eq!(filter(&n, &r), Err(Reason::HostPortInUse));
    n.ports_taken.clear();
    // Outside what the offer lets workloads publish.
    n.offer.as_mut().unwrap().host_ports = (31_000, 32_000);
    assert_eq!(filter(&n, &r), Err(Reason::HostPortNotOffered));
    n.offer.as_mut().unwrap().host_ports = (30_000, 32_767);
    n.operator = "a".into();
    assert_eq!(filter(&n, &r), Err(Reason::OperatorLimit));
    assert_eq!(filter(&node("m", "b", "FR"), &r), Err(Reason::JurisdictionNotAllowed));
}

#[test]
fn unschedulable_says_how_many_nodes_each_filter_rejected() {
    let policy = Policy {
        denied_operators: ["evil"].map(String::from).into(),
        allowed_jurisdictions: ["DE"].map(String::from).into(),
        ..Policy::default()
    };
    let k = Constraints::default();
    let per = HashMap::new();
    let nodes = vec![
        node("a", "x", "FR"),
        node("b", "x", "US"),
        node("c", "y", "FR"),
        node("d", "evil", "DE"),
        node("e", "evil", "DE"),
    ];
    let why = place(&nodes, &request(Some(&policy), &k, &per), &Weights::default()).unwrap_err();
    assert_eq!(
        why.to_string(),
        "0/5 nodes available: 3 nodes: jurisdiction not allowed; 2 nodes: operator denied"
    );
    assert_eq!(
        place(&[], &request(None, &k, &per), &Weights::default()).unwrap_err().to_string(),
        "no nodes registered"
    );
}

#[test]
fn attestations_count_only_from_attesters_with_standing_under_the_policy() {
    // A thousand fresh keys: no reputation, not members, named by no policy.
    let fresh: Vec<String> = (0..1000).map(|i| format!("fresh{i}")).collect();
    let mut dids: Vec<&str> = fresh.iter().map(String::as_str).collect();
    let strangers = attested_by(&dids, &[]);
    assert_eq!((strangers.len(), strangers.with_standing(&anyone(), "op")), (1000, 0));
    let one = Policy { required_attestations: 1, ..anyone() };
    assert_eq!(strangers.with_standing(&one, "op"), 0);
    // A member counts under every policy; an operator the policy names counts under that one.
    dids.extend(["m1", "named"]);
    let mixed = attested_by(&dids, &[]);
    assert_eq!(mixed.with_standing(&one, "op"), 1);
    let naming = Policy { allowed_operators: ["a", "named"].map(String::from).into(), ..one.clone() };
    assert_eq!(mixed.with_standing(&naming, "op"), 2);
    // Reputation: vouched for by the members and at the policy's floor (0 when unset); one
    // nobody trusted vouches for has none, whatever its composite.
    let edges = |pairs: &[(&str, &str)]| -> HashMap<String, Vec<String>> {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (a, b) in pairs {
            m.entry((*a).to_owned()).or_default().push((*b).to_owned());
        }
        m
    };
    let rep = attested_by(&["good", "fair", "zero"], &[("good", 0.8), ("fair", 0.3), ("zero", 0.0)]);
    assert_eq!(rep.with_standing(&one, "op"), 0, "nobody reached");
    let members_vouch = Arc::new(super::super::snapshot::Reach::of(
        &edges(&[("m1", "good"), ("m1", "fair")]),
        ["m1".to_owned()],
    ));
    let one = Policy { reach: members_vouch, ..one.clone() };
    assert_eq!(rep.with_standing(&one, "op"), 2);
    let floor = Policy { min_reputation: Some(0.5), ..one.clone() };
    assert_eq!(rep.with_standing(&floor, "op"), 1);
    // Below the floor but named: the policy's own word counts.
    let floor_naming = Policy { allowed_operators: ["fair".to_owned()].into(), ..floor.clone() };
    assert_eq!(rep.with_standing(&floor_naming, "op"), 2);
    // A did listed twice counts once.
    assert_eq!(attested_by(&["m1", "m1"], &[]).with_standing(&one, "op"), 1);
    // One the policy's named operators (or a member) vouch for counts under it, with no floor:
    // trust flows from the policy's own pre-trusted set. Under a floor it needs the reputation.
    let reach = Arc::new(super::super::snapshot::Reach::of(&edges(&[("m1", "fresh7")]), ["m1".to_owned()]));
    let vouched = Policy { reach, ..one.clone() };
    assert_eq!(strangers.with_standing(&vouched, "op"), 1);
    let vouched_floor = Policy { min_reputation: Some(0.5), ..vouched.clone() };
    assert_eq!(strangers.with_standing(&vouched_floor, "op"), 0);
    // An operator the members vouch for cannot give standing to keys of its own that attest it.
    let through = Arc::new(super::super::snapshot::Reach::of(
        &edges(&[("m1", "x"), ("x", "fresh7"), ("x", "fresh8")]),
        ["m1".to_owned()],
    ));
    let through = Policy { reach: through, ..one.clone() };
    assert_eq!(strangers.with_standing(&through, "x"), 0);
    assert_eq!(strangers.with_standing(&through, "someone else"), 2);

    let k = Constraints::default();
    let per = HashMap::new();
    let mut n = node("n", "a", "DE");
    n.attesters = strangers;
    let why = place(&[n], &request(Some(&one), &k, &per), &Weights::default()).unwrap_err();
    assert_eq!(
        why.to_string(),
        "0/1 nodes available: 1 node: too few attestations with standing (an attestation counts only from \
         a control-plane member, an operator the policy allows, or an operator they vouch for (directly or \
         through others they vouch for) whose reputation is at least the policy's minReputation)"
    );
}

#[test]
fn without_a_trust_policy_only_nodes_of_the_signer_or_of_members_take_a_workload() {
    let k = Constraints::default();
    let per = HashMap::new();
    let stranger = node("s", "mallory", "DE");
    let own = node("o", "alice", "DE");
    let member = Candidate { operator_is_member: true, ..node("m", "member", "DE") };
    let r = request(None, &k, &per);
    assert_eq!(filter(&stranger, &r), Err(Reason::UntrustedOperator));
    assert_eq!(filter(&own, &r), Ok(()));
    assert_eq!(filter(&member, &r), Ok(()));
    // A workload nobody signed has no nodes of its own.
    let unsigned = Request { signer: None, ..r };
    assert_eq!(filter(&own, &unsigned), Err(Reason::UntrustedOperator));
    assert_eq!(filter(&member, &unsigned), Ok(()));
    // Any TrustPolicy, even one that constrains nothing, is the owner's word instead.
    let policy = anyone();
    assert_eq!(filter(&stranger, &request(Some(&policy), &k, &per)), Ok(()));
    let why = place(&[stranger, node("s2", "mallory", "DE")], &r, &Weights::default()).unwrap_err();
    assert_eq!(
        why.to_string(),
        "0/2 nodes available: 2 nodes: operator not trusted (no TrustPolicy: only nodes of your own or of \
         the control plane; name a TrustPolicy with allowedOperators to use others)"
    );
}

#[test]
fn spread_prefers_operators_without_replicas_of_the_workload() {
    let k = Constraints::default();
    let policy = anyone();
    let nodes =
        vec![node("a1", "a", "DE"), node("a2", "a", "DE"), node("b1", "b", "DE"), node("c1", "c", "DE")];
    let mut per: HashMap<String, u32> = HashMap::new();
    let mut chosen = Vec::new();
    for _ in 0..3 {
        let i = place(&nodes, &request(Some(&policy), &k, &per), &Weights::default()).unwrap();
        *per.entry(nodes[i].operator.clone()).or_default() += 1;
        chosen.push(nodes[i].operator.clone());
    }
    chosen.sort();
    assert_eq!(chosen, ["a", "b", "c"]);
}

#[test]
fn ties_go_to_the_smallest_name_whatever_the_order() {
    let k = Constraints::default();
    let per = HashMap::new();
    let nodes = vec![node("b", "x", "DE"), node("a", "x", "DE")];
    let policy = anyone();
    let i = place(&nodes, &request(Some(&policy), &k, &per), &Weights::default()).unwrap();
    assert_eq!(nodes[i].name, "a");
}

// Property tests: random clusters, policies and replicas.

/// Who attests a candidate's operator, as the world has it: did → (member, reputation).
type Raw = BTreeMap<String, (bool, f64)>;

fn arb_attesters() -> impl Strategy<Value = Raw> {
    // The operators (who policies name) and fresh keys (whom nobody names).
    let did = prop::sample::select(vec!["op0", "op1", "op2", "op3", "k0", "k1", "k2", "k3", "k4", "k5"]);
    let standing = (prop::bool::weighted(0.15), prop::option::weighted(0.5, 1u32..=10))
        .prop_map(|(member, r)| (member, r.map_or(0.0, |r| f64::from(r) / 10.0)));
    prop::collection::btree_map(did.prop_map(String::from), standing, 0..6)
}

fn arb_candidate(i: usize) -> impl Strategy<Value = (Candidate, Raw)> {
    (
        (0..4usize, prop::bool::weighted(0.2)),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.9, (0..4usize, prop::bool::ANY)),
        (0u64..8000, 0u64..16, 0u64..4),
        (0u64..4000, 0u64..8),
        (0u32..=10, 0u32..=10, arb_attesters()),
    )
        .prop_map(move |((op, member), ready, unsched, offer, cap, used, (nr, or, raw))| {
            let attesters = Attesters::new(raw.keys().map(String::as_str), |a| raw[a].0, |a| raw[a].1);
            let c = Candidate {
                name: format!("n{i:03}"),
                uid: format!("u{i:03}"),
                operator: format!("op{op}"),
                operator_is_member: member,
                ready,
                unschedulable: unsched,
                offer: offer.map(|(j, ssd)| Offer {
                    jurisdiction: ["DE", "FR", "US", "CH"][j].to_owned(),
                    labels: if ssd {
                        [("disk".to_owned(), "ssd".to_owned())].into()
                    } else {
                        BTreeMap::new()
                    },
                    rates: Rates::default(),
                    host_ports: (30_000, 32_767),
                }),
                capacity: Amount { cpu: cap.0, memory: cap.1 * GI, storage: cap.2 * GI },
                used: Amount { cpu: used.0, memory: used.1 * GI, storage: 0 },
                node_reputation: f64::from(nr) / 10.0,
                operator_reputation: f64::from(or) / 10.0,
                ports_taken: BTreeSet::new(),
                attesters: Arc::new(attesters),
            };
            (c, raw)
        })
}

/// Candidates, and who attests each one's operator (by candidate name).
fn arb_nodes() -> impl Strategy<Value = (Vec<Candidate>, HashMap<String, Raw>)> {
    (0..24usize).prop_flat_map(|n| (0..n).map(arb_candidate).collect::<Vec<_>>()).prop_map(|v| {
        let raw = v.iter().map(|(c, r)| (c.name.clone(), r.clone())).collect();
        (v.into_iter().map(|(c, _)| c).collect(), raw)
    })
}

fn set(of: &'static [&'static str]) -> impl Strategy<Value = BTreeSet<String>> {
    prop::sample::subsequence(of, 0..=of.len()).prop_map(|v| v.into_iter().map(String::from).collect())
}

fn arb_policy() -> impl Strategy<Value = Option<Policy>> {
    prop::option::of(
        (
            prop::option::of(0u32..=10),
            set(&["op0", "op1", "op2", "op3"]),
            set(&["op0", "op1", "op2", "op3"]),
            0u32..4,
            set(&["DE", "FR", "US", "CH"]),
        )
            .prop_map(|(floor, allowed, denied, att, jur)| Policy {
                min_reputation: floor.map(|f| f64::from(f) / 10.0),
                allowed_operators: allowed,
                denied_operators: denied,
                required_attestations: att,
                allowed_jurisdictions: jur,
                ..Policy::default()
            }),
    )
}

fn arb_signer() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["op0", "op1", "op2", "op3", "k0"]).prop_map(String::from))
}

fn arb_constraints() -> impl Strategy<Value = Constraints> {
    (any::<bool>(), set(&["DE", "FR", "US", "CH"]), prop::option::of(1u32..4)).prop_map(|(ssd, jur, max)| {
        Constraints {
            node_selector: if ssd { [("disk".to_owned(), "ssd".to_owned())].into() } else { BTreeMap::new() },
            jurisdictions: jur,
            max_per_operator: max,
            host_ports: BTreeSet::new(),
        }
    })
}

/// Every hard constraint, written out again independently of `filter`, from what the world
/// says of each attester (`raw`) rather than from `Attesters`.
fn violates(
    c: &Candidate,
    raw: &Raw,
    need: Amount,
    p: Option<&Policy>,
    signer: Option<&str>,
    k: &Constraints,
    per: &HashMap<String, u32>,
) -> bool {
    let Some(offer) = &c.offer else { return true };
    let policy_broken = match p {
        // No TrustPolicy: the signer's own nodes and the control plane's, nobody else's.
        None => !c.operator_is_member && signer != Some(c.operator.as_str()),
        Some(p) => {
            let standing = raw
                .iter()
                .filter(|(a, (member, rep))| {
                    let floor = p.min_reputation.unwrap_or(0.0);
                    *member
                        || p.allowed_operators.contains(*a)
                        || (p.reach.reaches_without(a, &c.operator)
                            && *rep >= floor
                            && (*rep > 0.0 || floor <= 0.0))
                })
                .count();
            (!p.allowed_operators.is_empty() && !p.allowed_operators.contains(&c.operator))
                || p.denied_operators.contains(&c.operator)
                || p.min_reputation.is_some_and(|f| c.node_reputation < f || c.operator_reputation < f)
                || standing < p.required_attestations as usize
                || (!p.allowed_jurisdictions.is_empty()
                    && !p.allowed_jurisdictions.contains(&offer.jurisdiction))
        }
    };
    policy_broken
        || !c.ready
        || c.unschedulable
        || (!k.jurisdictions.is_empty() && !k.jurisdictions.contains(&offer.jurisdiction))
        || k.node_selector.iter().any(|(key, v)| offer.labels.get(key) != Some(v))
        || k.max_per_operator.is_some_and(|m| per.get(&c.operator).copied().unwrap_or(0) >= m)
        || c.used.cpu + need.cpu > c.capacity.cpu
        || c.used.memory + need.memory > c.capacity.memory
        || c.used.storage + need.storage > c.capacity.storage
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Named invariant: a hard placement constraint is never broken, across a whole run of
    /// placements that each use up capacity and count towards the per-operator limit.
    #[test]
    fn no_placement_ever_violates_a_hard_constraint(
        (mut nodes, raw) in arb_nodes(),
        policy in arb_policy(),
        signer in arb_signer(),
        k in arb_constraints(),
        replicas in 1usize..30,
        cpu in 0u64..2000,
        mem in 0u64..4,
    ) {
        let need = Amount { cpu, memory: mem * GI, storage: 0 };
        let signer = signer.as_deref();
        let mut per: HashMap<String, u32> = HashMap::new();
        for _ in 0..replicas {
            let r = Request { need, policy: policy.as_ref(), signer, constraints: &k, per_operator: &per, money: no_money(), avoid: no_avoid() };
            match place(&nodes, &r, &Weights::default()) {
                Ok(i) => {
                    let c = &nodes[i];
                    prop_assert!(!violates(c, &raw[&c.name], need, policy.as_ref(), signer, &k, &per), "placed on {:?}", c);
                    nodes[i].used = nodes[i].used.plus(need);
                    *per.entry(nodes[i].operator.clone()).or_default() += 1;
                }
                Err(why) => {
                    // Unplaceable only when every node breaks a constraint, and every node is counted.
                    prop_assert!(nodes.iter().all(|c| violates(c, &raw[&c.name], need, policy.as_ref(), signer, &k, &per)));
                    prop_assert_eq!(why.rejected.values().sum::<usize>(), nodes.len());
                }
            }
        }
    }

    /// Sorting attesters by standing and counting them under a policy agrees with counting
    /// each attester of the world's list one by one.
    #[test]
    fn attesters_with_standing_are_counted_as_one_by_one(raw in arb_attesters(), policy in arb_policy()) {
        // The members vouch for every other attester whose name has an even length.
        let mut vouches: HashMap<String, Vec<String>> = HashMap::new();
        vouches.insert("m-root".to_owned(), raw.keys().filter(|d| d.len() % 2 == 0).cloned().collect());
        let reach = Arc::new(super::super::snapshot::Reach::of(&vouches, ["m-root".to_owned()]));
        let policy = Policy { reach, ..policy.unwrap_or_default() };
        let a = Attesters::new(raw.keys().map(String::as_str), |d| raw[d].0, |d| raw[d].1);
        let floor = policy.min_reputation.unwrap_or(0.0);
        let one_by_one = raw
            .iter()
            .filter(|(d, (member, rep))| {
                let vouched = d.len() % 2 == 0 && d.as_str() != "op";
                *member || policy.allowed_operators.contains(*d) || (vouched && *rep >= floor && (*rep > 0.0 || floor <= 0.0))
            })
            .count();
        prop_assert_eq!(a.with_standing(&policy, "op"), one_by_one);
        prop_assert_eq!(a.len(), raw.len());
    }

    /// The same inputs give the same placement, in any order of the nodes.
    #[test]
    fn placement_is_deterministic_and_order_independent(
        (nodes, _raw) in arb_nodes(),
        policy in arb_policy(),
        signer in arb_signer(),
        k in arb_constraints(),
        seed in any::<u64>(),
    ) {
        let per = HashMap::new();
        let r = Request { need: need(), policy: policy.as_ref(), signer: signer.as_deref(), constraints: &k, per_operator: &per, money: no_money(), avoid: no_avoid() };
        let first = place(&nodes, &r, &Weights::default()).map(|i| nodes[i].name.clone());
        let again = place(&nodes, &r, &Weights::default()).map(|i| nodes[i].name.clone());
        prop_assert_eq!(&first, &again);
        let mut shuffled = nodes.clone();
        let len = shuffled.len().max(1);
        shuffled.rotate_left((seed as usize) % len);
        shuffled.reverse();
        let other = place(&shuffled, &r, &Weights::default()).map(|i| shuffled[i].name.clone());
        prop_assert_eq!(first.ok(), other.ok());
    }
}

#[test]
fn a_priced_node_needs_an_hour_of_credit_and_room_in_the_policy_s_spending() {
    let k = Constraints::default();
    let per = HashMap::new();
    let mut priced = node("priced", "op", "DE");
    // 1 credit per core-hour: the request (500m) costs 0.5 credits an hour.
    priced.offer.as_mut().unwrap().rates = Rates { cpu: 1_000_000, memory: 0, storage: 0 };
    let hour = 500_000;
    let policy = Policy { max_per_hour: Some(2 * hour), max_total: Some(10 * hour), ..Policy::default() };
    let check = |node: &Candidate, available: i64, per_hour: i64, spent: i64, signer: &str| {
        let money = Money { available: [("op".to_owned(), available)].into(), per_hour, spent };
        let r = Request {
            need: need(),
            policy: Some(&policy),
            signer: Some(signer),
            constraints: &k,
            per_operator: &per,
            money: &money,
            avoid: no_avoid(),
        };
        filter(node, &r)
    };
    assert_eq!(check(&priced, hour - 1, 0, 0, "alice"), Err(Reason::InsufficientCredit));
    assert_eq!(check(&priced, hour, 0, 0, "alice"), Ok(()));
    assert_eq!(check(&priced, hour, hour + 1, 0, "alice"), Err(Reason::SpendingPerHour));
    assert_eq!(check(&priced, hour, hour, 0, "alice"), Ok(()));
    assert_eq!(check(&priced, hour, 0, 10 * hour - 1, "alice"), Ok(()));
    assert_eq!(check(&priced, hour, 0, 10 * hour, "alice"), Err(Reason::SpendingTotal));
    // Credit for an hour of one replica is not credit for two on the same operator.
    let two = HashMap::from([("op".to_owned(), 1u32)]);
    let money = Money { available: [("op".to_owned(), hour)].into(), per_hour: 0, spent: 0 };
    let second = Request {
        need: need(),
        policy: Some(&policy),
        signer: Some("alice"),
        constraints: &k,
        per_operator: &two,
        money: &money,
        avoid: no_avoid(),
    };
    assert_eq!(filter(&priced, &second), Err(Reason::InsufficientCredit));
    // On its own node an owner pays nobody: no credit or limit applies.
    assert_eq!(check(&priced, 0, 5 * hour, 20 * hour, "op"), Ok(()));
    // Nor on a free one.
    priced.offer.as_mut().unwrap().rates = Rates::default();
    assert_eq!(check(&priced, 0, 5 * hour, 20 * hour, "alice"), Ok(()));
}

#[test]
fn a_node_that_could_not_open_the_sealed_values_is_avoided_with_its_reason() {
    let policy = None;
    let k = Constraints::default();
    let per = HashMap::new();
    let c = node("n1", "did:key:op", "DE");
    let signer = Some("did:key:op");
    let avoid: BTreeSet<String> = [c.uid.clone()].into();
    let r = Request {
        need: Amount::default(),
        policy,
        signer,
        constraints: &k,
        per_operator: &per,
        money: no_money(),
        avoid: &avoid,
    };
    assert_eq!(filter(&c, &r), Err(Reason::SecretNotOpened));
    assert!(Reason::SecretNotOpened.hint().unwrap().contains("ui seal --refresh"));
    let r = Request { avoid: no_avoid(), ..r };
    assert_eq!(filter(&c, &r), Ok(()));
}
