//! The control plane's members, as the apiserver lists them (`GET /members`), refreshed now and
//! then. Members are trusted with placement: their attestations count under every TrustPolicy,
//! and their nodes may take a workload that names none.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// The members' did:keys; `None` until the first answer.
pub type Members = watch::Receiver<Option<Arc<BTreeSet<String>>>>;

/// Most members a list may name: the control plane has a handful, so a longer answer is not one
/// to keep.
const MAX_MEMBERS: usize = 1024;

/// Asks the apiserver once.
pub async fn fetch(client: &Client) -> Result<BTreeSet<String>, Error> {
    let request = http::Request::get("/members").body(Vec::new()).expect("a valid request");
    let answer: serde_json::Value = client.request(request).await?;
    Ok(answer["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .take(MAX_MEMBERS)
        .collect())
}

/// Keeps `tx` up to date until `stop`: asks every `every` (every 2 s while it fails), and calls
/// `changed` after each change of the set.
pub async fn follow(
    client: Client,
    tx: watch::Sender<Option<Arc<BTreeSet<String>>>>,
    every: Duration,
    changed: impl Fn(),
    stop: CancellationToken,
) {
    loop {
        let wait = match fetch(&client).await {
            Ok(members) => {
                let new = tx.send_if_modified(|current| {
                    if current.as_deref() == Some(&members) {
                        return false;
                    }
                    *current = Some(Arc::new(members));
                    true
                });
                if new {
                    changed();
                }
                every
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the control plane's members (GET /members)");
                Duration::from_secs(2).min(every)
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
