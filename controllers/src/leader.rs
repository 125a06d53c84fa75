//! Leader election through a univrs `Lease` object, as client-go's `leaderelection`: acquire by
//! create, or by an update with a `resourceVersion` precondition once the holder's lease has
//! lapsed; renew with the same precondition. Several copies of a controller can run; only the
//! one holding the lease acts, and it stops acting at once when it cannot renew in time.

use std::time::Duration;

use api::kinds::LeaseSpec;
use api::meta::Time;
use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use client::resource::{Kube, api_in, is_conflict, is_not_found};

/// Where leases live and how long they last.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the controllers' leases.
    pub namespace: String,
    /// Who this process is (unique per process).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews (and a follower retries).
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// Leases in `univrs-system`, 15 s long, renewed every 2 s, held by `identity`.
    pub fn new(identity: String) -> Self {
        Self {
            namespace: api::kinds::SYSTEM_NAMESPACE.to_owned(),
            identity,
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }

    /// How long after starting a successful renewal this process may still act. Others may
    /// take over `duration` after the `renewTime` written, which has whole seconds (so may be up
    /// to a second early); stopping a renewal period and a second before that keeps two leaders
    /// from ever acting at once, clocks agreeing. For renewals to keep up, `duration` must be
    /// more than twice `renew_every` plus a second (`is_valid`).
    pub fn act_for(&self) -> Duration {
        self.duration.saturating_sub(self.renew_every + Duration::from_secs(1))
    }
}

impl LeaseConfig {
    /// Whether a holder renews (every `renew_every`) well before it must stop acting.
    pub fn is_valid(&self) -> bool {
        self.act_for() > self.renew_every
    }
}

/// What one attempt to acquire or renew found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    Held,
    HeldByOther,
}

/// Runs the election for lease `name` until `shutdown`, publishing on `leading` whether this
/// process holds it. On shutdown a held lease is released so a follower takes over at once.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    name: String,
    leading: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let api = api_in::<LeaseSpec>(&client, &config.namespace);
    // While leading: when this process must stop acting unless it has renewed by then.
    let mut deadline: Option<Instant> = None;
    let publish = |deadline: Option<Instant>| {
        let now = deadline.is_some();
        leading.send_if_modified(|l| std::mem::replace(l, now) != now);
    };
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            deadline = None;
            publish(deadline);
        }
        let started = Instant::now();
        let attempt = tokio::select! {
            () = shutdown.cancelled() => break,
            // The lease runs out before the renewal answers: stop acting now, not after.
            () = until(deadline) => None,
            r = tokio::time::timeout(config.renew_every, try_acquire(&api, &config, &name)) => Some(r),
        };
        match attempt {
            Some(Ok(Ok(Attempt::Held))) => deadline = Some(started + config.act_for()),
            Some(Ok(Ok(Attempt::HeldByOther))) => deadline = None,
            Some(Ok(Err(e))) => {
                tracing::warn!(lease = %name, error = %e, "lease: cannot reach the apiserver")
            }
            Some(Err(_)) => tracing::warn!(lease = %name, "lease: renewal timed out"),
            None => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            deadline = None;
        }
        publish(deadline);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(started + config.renew_every) => {}
            () = until(deadline) => {}
        }
    }
    if deadline.is_some() {
        leading.send_replace(false);
        release(&api, &config, &name).await;
    }
}

/// Sleeps until `t`, or forever when there is none.
async fn until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn try_acquire(
    api: &kube::Api<Kube<LeaseSpec>>,
    config: &LeaseConfig,
    name: &str,
) -> Result<Attempt, kube::Error> {
    let now = Time(Utc::now());
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX).max(1);
    let current = match api.get(name).await {
        Ok(lease) => lease,
        Err(e) if is_not_found(&e) => {
            let spec = LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now),
                renew_time: Some(now),
                lease_transitions: Some(0),
            };
            let meta = ObjectMeta { name: Some(name.to_owned()), ..Default::default() };
            return match api.create(&PostParams::default(), &Kube::new(meta, spec)).await {
                Ok(_) => Ok(Attempt::Held),
                Err(e) if is_conflict(&e) => Ok(Attempt::HeldByOther),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let mut next = current.clone();
    let holder = current.spec.holder_identity.as_deref().unwrap_or_default();
    if holder == config.identity {
        next.spec.renew_time = Some(now);
        next.spec.lease_duration_seconds = Some(seconds);
    } else {
        let lapsed = match (current.spec.renew_time, current.spec.lease_duration_seconds) {
            (Some(renewed), Some(secs)) => renewed.0 + chrono::Duration::seconds(secs.into()) < now.0,
            _ => true,
        };
        if !holder.is_empty() && !lapsed {
            return Ok(Attempt::HeldByOther);
        }
        next.spec = LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(now),
            renew_time: Some(now),
            lease_transitions: Some(current.spec.lease_transitions.unwrap_or(0) + 1),
        };
    }
    // `next` keeps the resourceVersion read: the update is compare-and-swap.
    match api.replace(name, &PostParams::default(), &next).await {
        Ok(_) => Ok(Attempt::Held),
        Err(e) if is_conflict(&e) => Ok(Attempt::HeldByOther),
        Err(e) => Err(e),
    }
}

async fn release(api: &kube::Api<Kube<LeaseSpec>>, config: &LeaseConfig, name: &str) {
    let Ok(mut lease) = api.get(name).await else { return };
    if lease.spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    lease.spec.holder_identity = None;
    lease.spec.renew_time = None;
    if let Err(e) = api.replace(name, &PostParams::default(), &lease).await {
        tracing::warn!(lease = %name, error = %e, "lease: release failed; it lapses on its own");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_stops_acting_a_renewal_and_a_second_before_others_may_take_over() {
        let mut c = LeaseConfig::new("me".into());
        assert_eq!(c.act_for(), Duration::from_secs(12));
        assert!(c.is_valid());
        c.duration = Duration::from_secs(4);
        c.renew_every = Duration::from_secs(1);
        assert_eq!(c.act_for(), Duration::from_secs(2));
        assert!(c.is_valid());
        // Renewing every second with a 3 s lease leaves no time to renew before stopping.
        c.duration = Duration::from_secs(3);
        assert!(!c.is_valid());
    }
}
