//! Mutual credit, as pure functions: the apiserver decides each Transfer with them in the Raft
//! entry that commits it, and the property tests below hold them to the ledger's invariants.
//!
//! Lines are bilateral (as Trustlines): a `CreditGrant` signed by G naming E lets E owe G up to
//! its `limit`, while it is in force (not expired; cutting it — deleting it or lowering the
//! limit — is G's alone). A Transfer of `amount` from P to Q moves P's balance with Q down and
//! Q's with P up by the same amount, so **the sum of all balances is always zero**. It commits
//! only if afterwards P owes Q no more than the lines Q grants P (what Q owed P first is used
//! first); otherwise it is refused and changes no balance. Nobody can pay with credit that
//! someone else extended: a thousand fresh keys granting each other lines buy nothing from an
//! operator who granted them none.

use chrono::{DateTime, Utc};

use crate::credits::Credits;
use crate::identity::Did;
use crate::kinds::{AccountStatus, LineBalance};
use crate::meta::Time;

/// The largest balance the ledger keeps, either way (what [`Credits`] text can hold).
pub const MAX: Credits = Credits::from_micros(999_999_999_999_999_999);

/// One credit line as the ledger reads a `CreditGrant`.
#[derive(Clone, Copy, Debug)]
pub struct Grant<'a> {
    /// Its signer.
    pub granter: &'a Did,
    /// Who may owe the granter.
    pub grantee: &'a Did,
    /// How much.
    pub limit: Credits,
    /// When it ends (none: open-ended).
    pub expires: Option<DateTime<Utc>>,
}

impl Grant<'_> {
    /// Whether the line is in force at `now`.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// How much `payer` may owe `payee` at `now`: the sum of the lines in force that `payee`
/// grants `payer` (saturating at [`MAX`]).
pub fn limit<'a>(
    grants: impl IntoIterator<Item = Grant<'a>>,
    payer: &Did,
    payee: &Did,
    now: DateTime<Utc>,
) -> Credits {
    grants
        .into_iter()
        .filter(|g| g.granter == payee && g.grantee == payer && g.in_force(now) && g.limit > Credits::ZERO)
        .fold(Credits::ZERO, |sum, g| sum.checked_add(g.limit).map_or(MAX, |s| s.min(MAX)))
}

/// The owner's balance with `counterparty` (zero when they never traded).
pub fn line(account: &AccountStatus, counterparty: &Did) -> Credits {
    account.lines.iter().find(|l| &l.counterparty == counterparty).map_or(Credits::ZERO, |l| l.balance)
}

/// Whether a transfer may commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It commits: post it to both accounts.
    Commit,
    /// It is refused, for this reason (for people, naming the line).
    Refuse(String),
}

/// Whether `payer`, whose balance with `payee` is `balance`, may pay it `amount` when `payee`
/// grants it lines of `limit` in all.
pub fn decide(payer: &Did, payee: &Did, balance: Credits, limit: Credits, amount: Credits) -> Decision {
    if amount <= Credits::ZERO {
        return Decision::Refuse("the amount must be more than 0".into());
    }
    let Some(after) =
        balance.checked_sub(amount).filter(|a| *a >= Credits::ZERO.checked_sub(MAX).expect("in range"))
    else {
        return Decision::Refuse("the balance would leave the ledger's range".into());
    };
    let floor = Credits::ZERO.checked_sub(limit).expect("limits are within the range");
    if after >= floor {
        return Decision::Commit;
    }
    let (p, q) = (payer.short(), payee.short());
    Decision::Refuse(if limit == Credits::ZERO {
        format!(
            "no credit line: {p} has {balance} with {q}, and {q} grants {p} no credit (a CreditGrant signed by {q} with grantee {p})"
        )
    } else {
        format!(
            "over the credit line: {p} would owe {q} {}, more than the {limit} that {q}'s CreditGrants to {p} allow",
            Credits::ZERO.checked_sub(after).expect("in range")
        )
    })
}

/// Posts `delta` to the owner's balance with `counterparty` (and its total) at `at`. Fails,
/// changing nothing, when a balance would leave the ledger's range.
pub fn post(account: &mut AccountStatus, counterparty: &Did, delta: Credits, at: Time) -> Result<(), String> {
    let out_of_range = || "a balance would leave the ledger's range".to_owned();
    let in_range = |c: Credits| c <= MAX && c >= Credits::ZERO.checked_sub(MAX).expect("in range");
    let total = account.balance.checked_add(delta).filter(|t| in_range(*t)).ok_or_else(out_of_range)?;
    let new_line =
        line(account, counterparty).checked_add(delta).filter(|l| in_range(*l)).ok_or_else(out_of_range)?;
    match account.lines.iter_mut().find(|l| &l.counterparty == counterparty) {
        Some(l) => l.balance = new_line,
        None => {
            account.lines.push(LineBalance { counterparty: counterparty.clone(), balance: new_line });
            account.lines.sort_by(|a, b| a.counterparty.as_str().cmp(b.counterparty.as_str()));
        }
    }
    account.balance = total;
    account.transfers += 1;
    account.updated_at = Some(at);
    Ok(())
}

/// Decides and posts one transfer between two accounts: both are changed, or neither.
pub fn transfer(
    payer: (&Did, &mut AccountStatus),
    payee: (&Did, &mut AccountStatus),
    limit: Credits,
    amount: Credits,
    at: Time,
) -> Decision {
    let (p, pa) = payer;
    let (q, qa) = payee;
    if let refused @ Decision::Refuse(_) = decide(p, q, line(pa, q), limit, amount) {
        return refused;
    }
    let (before_p, before_q) = (pa.clone(), qa.clone());
    let negative = Credits::ZERO.checked_sub(amount).expect("amounts are in range");
    if let Err(e) = post(pa, q, negative, at).and_then(|()| post(qa, p, amount, at)) {
        *pa = before_p;
        *qa = before_q;
        return Decision::Refuse(e);
    }
    Decision::Commit
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Duration;
    use proptest::prelude::*;

    use super::*;

    fn did(i: u8) -> Did {
        Did::from_key(&ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32]).verifying_key())
    }

    fn c(credits: i64) -> Credits {
        Credits::from_micros(credits * Credits::SCALE)
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_payment_draws_on_the_line_its_payee_granted_and_no_further() {
        let (alice, bob, carol) = (did(0), did(1), did(2));
        let grants = [
            Grant { granter: &bob, grantee: &alice, limit: c(100), expires: None },
            // Carol's line to Alice is no use for paying Bob.
            Grant { granter: &carol, grantee: &alice, limit: c(1000), expires: None },
        ];
        let lim = limit(grants, &alice, &bob, t0());
        assert_eq!(lim, c(100));
        let (mut a, mut b) = (AccountStatus::default(), AccountStatus::default());
        let at = Time(t0());
        assert_eq!(transfer((&alice, &mut a), (&bob, &mut b), lim, c(60), at), Decision::Commit);
        let Decision::Refuse(why) = transfer((&alice, &mut a), (&bob, &mut b), lim, c(60), at) else {
            panic!("over the line")
        };
        assert!(why.contains("over the credit line") && why.contains("120"), "{why}");
        assert_eq!((a.balance, b.balance), (c(-60), c(60)), "a refusal changes nothing");
        // Bob paying Alice back needs no line: he owes nothing yet, she owes him.
        assert_eq!(transfer((&bob, &mut b), (&alice, &mut a), Credits::ZERO, c(60), at), Decision::Commit);
        assert_eq!((a.balance, b.balance, line(&a, &bob)), (Credits::ZERO, Credits::ZERO, Credits::ZERO));
        let Decision::Refuse(why) = transfer((&bob, &mut b), (&alice, &mut a), Credits::ZERO, c(1), at)
        else {
            panic!("no line")
        };
        assert!(why.starts_with("no credit line"), "{why}");
    }

    #[test]
    fn an_expired_line_is_no_line() {
        let (alice, bob) = (did(0), did(1));
        let g = [Grant { granter: &bob, grantee: &alice, limit: c(5), expires: Some(t0()) }];
        assert_eq!(limit(g, &alice, &bob, t0() - Duration::seconds(1)), c(5));
        assert_eq!(limit(g, &alice, &bob, t0()), Credits::ZERO);
    }

    /// One step of a random history.
    #[derive(Clone, Debug)]
    enum Step {
        Grant { granter: u8, grantee: u8, limit: i64, for_secs: Option<i64> },
        Cut { granter: u8, grantee: u8 },
        Pay { from: u8, to: u8, micros: i64 },
        Wait { secs: i64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        let who = 0u8..5;
        prop_oneof![
            (who.clone(), who.clone(), 1i64..200, proptest::option::of(1i64..100)).prop_map(
                |(granter, grantee, limit, for_secs)| Step::Grant { granter, grantee, limit, for_secs }
            ),
            (who.clone(), who.clone()).prop_map(|(granter, grantee)| Step::Cut { granter, grantee }),
            (who.clone(), who, 1i64..150_000_000).prop_map(|(from, to, micros)| Step::Pay {
                from,
                to,
                micros
            }),
            (1i64..60).prop_map(|secs| Step::Wait { secs }),
        ]
    }

    proptest! {
        /// After any history of grants, cuts, expiries and payments (committed or refused):
        /// the balances sum to zero, each line is the mirror of its other side, every account's
        /// total is the sum of its lines, and no payment committed below its payer's limit.
        #[test]
        fn balances_sum_to_zero_and_no_payment_overdraws_a_line(steps in proptest::collection::vec(step(), 1..120)) {
            let dids: Vec<Did> = (0..5).map(did).collect();
            let mut accounts: BTreeMap<u8, AccountStatus> = (0..5).map(|i| (i, AccountStatus::default())).collect();
            let mut grants: Vec<(u8, u8, Credits, Option<DateTime<Utc>>)> = Vec::new();
            let mut now = t0();
            for s in steps {
                match s {
                    Step::Grant { granter, grantee, limit, for_secs } => {
                        grants.push((granter, grantee, c(limit), for_secs.map(|f| now + Duration::seconds(f))));
                    }
                    Step::Cut { granter, grantee } => grants.retain(|g| (g.0, g.1) != (granter, grantee)),
                    Step::Wait { secs } => now += Duration::seconds(secs),
                    Step::Pay { from, to, micros } => {
                        if from == to { continue; }
                        let lim = limit(
                            grants.iter().map(|g| Grant { granter: &dids[g.0 as usize], grantee: &dids[g.1 as usize], limit: g.2, expires: g.3 }),
                            &dids[from as usize], &dids[to as usize], now,
                        );
                        let mut pa = accounts[&from].clone();
                        let mut qa = accounts[&to].clone();
                        let before = line(&pa, &dids[to as usize]);
                        let amount = Credits::from_micros(micros);
                        let d = transfer((&dids[from as usize], &mut pa), (&dids[to as usize], &mut qa), lim, amount, Time(now));
                        if d == Decision::Commit {
                            let after = line(&pa, &dids[to as usize]);
                            prop_assert_eq!(after, before.checked_sub(amount).unwrap());
                            prop_assert!(after >= Credits::ZERO.checked_sub(lim).unwrap(), "overdrawn: {after} below -{lim}");
                        } else {
                            prop_assert_eq!(&pa, &accounts[&from]);
                            prop_assert_eq!(&qa, &accounts[&to]);
                        }
                        accounts.insert(from, pa);
                        accounts.insert(to, qa);
                    }
                }
            }
            let sum = accounts.values().fold(Credits::ZERO, |s, a| s.checked_add(a.balance).unwrap());
            prop_assert_eq!(sum, Credits::ZERO);
            for (i, a) in &accounts {
                let lines = a.lines.iter().fold(Credits::ZERO, |s, l| s.checked_add(l.balance).unwrap());
                prop_assert_eq!(lines, a.balance);
                for l in &a.lines {
                    let j = dids.iter().position(|d| *d == l.counterparty).unwrap() as u8;
                    prop_assert_eq!(line(&accounts[&j], &dids[*i as usize]), Credits::ZERO.checked_sub(l.balance).unwrap());
                }
            }
        }
    }
}
