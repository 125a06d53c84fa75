use proptest::prelude::*;

use super::*;

const GI: u64 = 1 << 30;

fn node(name: &str, operator: &str, jurisdiction: &str) -> Candidate {
    Candidate {
        name: name.to_owned(),
        operator: operator.to_owned(),
        ready: true,
        unschedulable: false,
        offer: Some(Offer { jurisdiction: jurisdiction.to_owned(), labels: BTreeMap::new() }),
        capacity: Amount { cpu: 4000, memory: 8 * GI, storage: 100 * GI },
        used: Amount::default(),
        node_reputation: 0.5,
        operator_reputation: 0.5,
        attesters: 0,
    }
}

fn need() -> Amount {
    Amount { cpu: 500, memory: GI, storage: 0 }
}

fn request<'a>(policy: Option<&'a Policy>, k: &'a Constraints, per: &'a HashMap<String, u32>) -> Request<'a> {
    Request { need: need(), policy, constraints: k, per_operator: per }
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
    };
    let r = request(Some(&policy), &k, &per);
    let mut ok = node("ok", "a", "DE");
    ok.attesters = 1;
    assert_eq!(filter(&ok, &r), Ok(()));
    let cases: Vec<(Candidate, Reason)> = vec![
        (Candidate { ready: false, ..ok.clone() }, Reason::NotReady),
        (Candidate { unschedulable: true, ..ok.clone() }, Reason::Unschedulable),
        (Candidate { offer: None, ..ok.clone() }, Reason::NoOffer),
        (Candidate { operator: "c".into(), ..ok.clone() }, Reason::OperatorNotAllowed),
        (Candidate { operator: "b".into(), ..ok.clone() }, Reason::OperatorDenied),
        (Candidate { operator_reputation: 0.0, ..ok.clone() }, Reason::ReputationTooLow),
        (Candidate { node_reputation: 0.39, ..ok.clone() }, Reason::ReputationTooLow),
        (Candidate { attesters: 0, ..ok.clone() }, Reason::TooFewAttestations),
        (node("x", "a", "FR"), Reason::TooFewAttestations),
        (Candidate { attesters: 1, ..node("x", "a", "FR") }, Reason::JurisdictionNotAllowed),
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
    };
    let r = request(None, &k, &per);
    let mut n = node("n", "b", "DE");
    assert_eq!(filter(&n, &r), Err(Reason::NodeSelectorMismatch));
    n.offer.as_mut().unwrap().labels.insert("disk".into(), "ssd".into());
    assert_eq!(filter(&n, &r), Ok(()));
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
fn spread_prefers_operators_without_replicas_of_the_workload() {
    let k = Constraints::default();
    let nodes =
        vec![node("a1", "a", "DE"), node("a2", "a", "DE"), node("b1", "b", "DE"), node("c1", "c", "DE")];
    let mut per: HashMap<String, u32> = HashMap::new();
    let mut chosen = Vec::new();
    for _ in 0..3 {
        let i = place(&nodes, &request(None, &k, &per), &Weights::default()).unwrap();
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
    let i = place(&nodes, &request(None, &k, &per), &Weights::default()).unwrap();
    assert_eq!(nodes[i].name, "a");
}

// Property tests: random clusters, policies and replicas.

fn arb_candidate(i: usize) -> impl Strategy<Value = Candidate> {
    (
        0..4usize,
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.9, (0..4usize, prop::bool::ANY)),
        (0u64..8000, 0u64..16, 0u64..4),
        (0u64..4000, 0u64..8),
        (0u32..=10, 0u32..=10, 0u32..4),
    )
        .prop_map(move |(op, ready, unsched, offer, cap, used, (nr, or, att))| Candidate {
            name: format!("n{i:03}"),
            operator: format!("op{op}"),
            ready,
            unschedulable: unsched,
            offer: offer.map(|(j, ssd)| Offer {
                jurisdiction: ["DE", "FR", "US", "CH"][j].to_owned(),
                labels: if ssd { [("disk".to_owned(), "ssd".to_owned())].into() } else { BTreeMap::new() },
            }),
            capacity: Amount { cpu: cap.0, memory: cap.1 * GI, storage: cap.2 * GI },
            used: Amount { cpu: used.0, memory: used.1 * GI, storage: 0 },
            node_reputation: f64::from(nr) / 10.0,
            operator_reputation: f64::from(or) / 10.0,
            attesters: att,
        })
}

fn arb_nodes() -> impl Strategy<Value = Vec<Candidate>> {
    (0..24usize).prop_flat_map(|n| (0..n).map(arb_candidate).collect::<Vec<_>>())
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
            }),
    )
}

fn arb_constraints() -> impl Strategy<Value = Constraints> {
    (any::<bool>(), set(&["DE", "FR", "US", "CH"]), prop::option::of(1u32..4)).prop_map(|(ssd, jur, max)| {
        Constraints {
            node_selector: if ssd { [("disk".to_owned(), "ssd".to_owned())].into() } else { BTreeMap::new() },
            jurisdictions: jur,
            max_per_operator: max,
        }
    })
}

/// Every hard constraint, written out again independently of `filter`.
fn violates(
    c: &Candidate,
    need: Amount,
    p: Option<&Policy>,
    k: &Constraints,
    per: &HashMap<String, u32>,
) -> bool {
    let Some(offer) = &c.offer else { return true };
    let policy_broken = p.is_some_and(|p| {
        (!p.allowed_operators.is_empty() && !p.allowed_operators.contains(&c.operator))
            || p.denied_operators.contains(&c.operator)
            || p.min_reputation.is_some_and(|f| c.node_reputation < f || c.operator_reputation < f)
            || c.attesters < p.required_attestations
            || (!p.allowed_jurisdictions.is_empty() && !p.allowed_jurisdictions.contains(&offer.jurisdiction))
    });
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
        mut nodes in arb_nodes(),
        policy in arb_policy(),
        k in arb_constraints(),
        replicas in 1usize..30,
        cpu in 0u64..2000,
        mem in 0u64..4,
    ) {
        let need = Amount { cpu, memory: mem * GI, storage: 0 };
        let mut per: HashMap<String, u32> = HashMap::new();
        for _ in 0..replicas {
            let r = Request { need, policy: policy.as_ref(), constraints: &k, per_operator: &per };
            match place(&nodes, &r, &Weights::default()) {
                Ok(i) => {
                    prop_assert!(!violates(&nodes[i], need, policy.as_ref(), &k, &per), "placed on {:?}", nodes[i]);
                    nodes[i].used = nodes[i].used.plus(need);
                    *per.entry(nodes[i].operator.clone()).or_default() += 1;
                }
                Err(why) => {
                    // Unplaceable only when every node breaks a constraint, and every node is counted.
                    prop_assert!(nodes.iter().all(|c| violates(c, need, policy.as_ref(), &k, &per)));
                    prop_assert_eq!(why.rejected.values().sum::<usize>(), nodes.len());
                }
            }
        }
    }

    /// The same inputs give the same placement, in any order of the nodes.
    #[test]
    fn placement_is_deterministic_and_order_independent(
        nodes in arb_nodes(),
        policy in arb_policy(),
        k in arb_constraints(),
        seed in any::<u64>(),
    ) {
        let per = HashMap::new();
        let r = Request { need: need(), policy: policy.as_ref(), constraints: &k, per_operator: &per };
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
