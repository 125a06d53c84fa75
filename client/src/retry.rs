//! Retrying, said once: the backoff every client waits between attempts, the conflict-retry
//! of a read-modify-write ([`modify`]), and waiting for a condition ([`poll_until`]).

use std::future::Future;
use std::time::Duration;

use api::KindSpec;
use kube::Api;
use kube::api::PostParams;

use crate::resource::{Kube, is_conflict};

/// How many times a write that lost a race (409 Conflict) is read and made again.
pub const CONFLICT_ATTEMPTS: u32 = 10;

/// The wait after `failures` failures in a row: 1, 2, 4 … seconds, at most five minutes.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300))
}

/// The short wait before attempt `attempt` of a conflict retry: 0, 20, 40 … ms, at most a
/// second (the competing writer is another client, not an outage).
pub fn conflict_pause(attempt: u32) -> Duration {
    Duration::from_millis(20 * u64::from(attempt)).min(Duration::from_secs(1))
}

/// Why [`modify`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum ModifyError<E> {
    /// The apiserver refused (or could not be reached).
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// The change itself failed.
    #[error("{0}")]
    Change(E),
    /// Someone else kept writing the object.
    #[error("the object kept changing while it was being written ({CONFLICT_ATTEMPTS} attempts)")]
    Contended,
}

/// Reads the object `name`, lets `change` make what it should become (`Ok(None)`: nothing to
/// do), and replaces it with the read `resourceVersion` as precondition; on a conflict, reads
/// it again and asks `change` again, up to [`CONFLICT_ATTEMPTS`] times. Returns the object
/// as written (or as read, when nothing changed).
pub async fn modify<S, E>(
    api: &Api<Kube<S>>,
    name: &str,
    mut change: impl FnMut(&Kube<S>) -> Result<Option<Kube<S>>, E>,
) -> Result<Kube<S>, ModifyError<E>>
where
    S: KindSpec,
{
    for attempt in 0..CONFLICT_ATTEMPTS {
        tokio::time::sleep(conflict_pause(attempt)).await;
        let current = api.get(name).await?;
        let Some(mut wanted) = change(&current).map_err(ModifyError::Change)? else { return Ok(current) };
        wanted.metadata.resource_version = current.metadata.resource_version.clone();
        match api.replace(name, &PostParams::default(), &wanted).await {
            Ok(written) => return Ok(written),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ModifyError::Contended)
}

/// Asks `check` every `every` until it answers `Some`, or `timeout` passes (`None`).
pub async fn poll_until<T, F>(timeout: Duration, every: Duration, mut check: impl FnMut() -> F) -> Option<T>
where
    F: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(t) = check().await {
            return Some(t);
        }
        if tokio::time::Instant::now() + every > deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// The blocking [`poll_until`], for commands that are not async.
pub fn poll_until_blocking<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(t) = check() {
            return Some(t);
        }
        if std::time::Instant::now() + every > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}
