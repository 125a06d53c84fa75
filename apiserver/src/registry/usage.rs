//! The registry's side of the quotas: each signer's usage, followed from the store's change
//! history, checked before a write is committed (see [`crate::quota`]).

use super::{ApiError, Registry, unavailable};
use crate::access::Caller;
use crate::quota;

impl Registry {
    /// What `signer` uses now, counted up to the last applied revision; a ledger far behind
    /// catches up off the async workers ([`Registry::catching_up`]).
    async fn usage_of(&self, signer: &str) -> Result<quota::Usage, ApiError> {
        // Never wait for the lock here: another request may hold it for a long catch-up.
        let at = self.ledger.try_lock().ok().and_then(|ledger| ledger.at());
        let signer = signer.to_owned();
        self.catching_up(at, move |reg| reg.usage_now(&signer)).await?
    }

    /// [`Registry::usage_of`], following every change since the ledger's revision here.
    fn usage_now(&self, signer: &str) -> Result<quota::Usage, ApiError> {
        let state = &*self.store;
        let mut ledger = self.ledger.lock().expect("quota ledger lock");
        loop {
            let Some(at) = ledger.at() else {
                let (all, revision) = state.list("/").map_err(unavailable)?;
                ledger.reset(revision, all.iter().map(|(k, v)| (k.as_str(), v.value.as_str())));
                continue;
            };
            let applied = *state.subscribe().borrow();
            match state.changes_after(at, 4096).map_err(unavailable)? {
                // Fell behind the history: count again from the current state.
                Err(_) => *ledger = quota::Ledger::default(),
                Ok(batch) => {
                    for (revision, c) in &batch.changes {
                        let (prev, new) = (c.prev.as_ref(), c.new.as_ref());
                        ledger.change(
                            *revision,
                            &c.key,
                            prev.map(|s| s.value.as_str()),
                            new.map(|s| s.value.as_str()),
                        );
                    }
                    ledger.advance(batch.upto);
                    if batch.upto >= applied {
                        return Ok(ledger.usage(signer));
                    }
                }
            }
        }
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
