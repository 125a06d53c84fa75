//! The node agent's Events about the replicas bound to it (pulls, starts, probe failures,
//! kills, back-off), through the one recorder (`client::events`), as
//! [`CONTROLLER`] of instance NODE: the apiserver takes a node's Events only about replicas
//! bound to it and with its own name as `reportingInstance`.

use api::kinds::ReplicaSpec;
use api::kinds::event::EventType;
use client::Kube;
use client::events::{Recorder, reference_to};
use kube::Client;
use serde_json::Value;

/// The `reportingController` of the agent's Events.
pub const CONTROLLER: &str = "univrs.io/node-agent";

/// The recorder of the agent of `node`.
pub fn recorder(client: &Client, node: &str) -> Recorder {
    Recorder::new(client.clone(), CONTROLLER, node)
}

/// A `Normal` event about `replica`.
pub async fn normal(events: &Recorder, replica: &Kube<ReplicaSpec>, reason: &str, action: &str, note: &str) {
    events.record(&reference_to(replica), None, EventType::Normal, reason, action, note).await;
}

/// A `Warning` event about `replica`.
pub async fn warn(events: &Recorder, replica: &Kube<ReplicaSpec>, reason: &str, action: &str, note: &str) {
    events.record(&reference_to(replica), None, EventType::Warning, reason, action, note).await;
}

/// `Pulling` before the first resolution of a replica's OCI image (its digest not pinned yet):
/// the image as `images::Images::source` sees it, the same decision the pull makes.
pub async fn pulling(events: &Recorder, config: &crate::node::Config, replica: &Kube<ReplicaSpec>) {
    if config.runtime != crate::run::RuntimeKind::Container {
        return;
    }
    let images = crate::images::Images::new(&config.images);
    if let Ok(crate::images::Source::Oci(image)) = images.source(&replica.spec.container) {
        normal(events, replica, "Pulling", "Pull", &format!("Pulling image {image}")).await;
    }
}

/// The event of a status the image resolution reports (`images::resolve_for_run`): the image
/// pulled and pinned (`imageID`), a pull that failed, a pull backing off.
pub async fn image(events: &Recorder, replica: &Kube<ReplicaSpec>, status: &Value) {
    let message = status.get("message").and_then(Value::as_str).unwrap_or_default();
    if let Some(id) = status.get("imageID").and_then(Value::as_str) {
        let note = format!(
            "Successfully pulled image {}: {id}",
            replica.spec.container.image.as_deref().unwrap_or("")
        );
        normal(events, replica, "Pulled", "Pull", &note).await;
    } else {
        match status.get("reason").and_then(Value::as_str) {
            Some("ErrImagePull") => warn(events, replica, "Failed", "Pull", message).await,
            Some("ImagePullBackOff") => warn(events, replica, "BackOff", "Pull", message).await,
            _ => {}
        }
    }
}
