//! The registry's side of the quotas: each signer's usage, followed from the store's change
//! history, checked before a write is committed (see [`crate::quota`]).

use super::follow::Index;
use super::{ApiError, Registry};
use crate::access::Caller;
use crate::quota;
use crate::raft::history::Change;

impl Index for quota::Ledger {
    fn prefix() -> String {
        "/".to_owned()
    }

    fn at(&self) -> Option<u64> {
        quota::Ledger::at(self)
    }

    fn insert(&mut self, key: &str, value: &str) {
        quota::Ledger::insert(self, key, value);
    }

    fn change(&mut self, revision: u64, c: &Change) {
        let (prev, new) =
            (c.prev.as_ref().map(|s| s.value.as_str()), c.new.as_ref().map(|s| s.value.as_str()));
        quota::Ledger::change(self, revision, &c.key, prev, new);
    }

    fn advance(&mut self, revision: u64) {
        quota::Ledger::advance(self, revision);
    }
}

impl Registry {
    /// What `signer` uses now, counted up to the last applied revision; a ledger far behind
    /// catches up off the async workers ([`super::follow::Followed::read`]).
    async fn usage_of(&self, signer: &str) -> Result<quota::Usage, ApiError> {
        let signer = signer.to_owned();
        self.ledger.read(&self.store, move |ledger| ledger.usage(&signer)).await
    }

    /// Checks that writing `new` at `key` in place of `old` keeps the signer within its
    /// quotas (members are exempt).
    pub(crate) async fn charge(
        &self,
        who: &Caller,
        key: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<(), ApiError> {
        if who.member {
            return Ok(());
        }
        let new_cost = new.and_then(|n| quota::cost(key, n));
        let Some((signer, added)) = new_cost else {
            // Nobody's quota pays for it (a Lease, a Replica's status): bounded per object.
            return match new.and_then(|n| quota::unsigned_breach(old, n)) {
                Some(message) => Err(ApiError::TooLarge(message)),
                None => Ok(()),
            };
        };
        let before = self.usage_of(&signer).await?;
        let mut after = before;
        after.add(added);
        if let Some((_, removed)) = old.and_then(|o| quota::cost(key, o)).filter(|(s, _)| *s == signer) {
            after.sub(removed);
        }
        match quota::breach(&self.limits, before, after) {
            None => Ok(()),
            Some(message) => Err(ApiError::TooManyRequests { message, retry_after: 60 }),
        }
    }
}
