//! The univrs apiserver: Kubernetes-compatible REST (axum), admission, Raft (openraft) over
//! durable storage, and watch fan-out (design.md §5).
//!
//! So far: [`raft`], the replicated log and state machine on disk, and [`registry`], objects
//! with Kubernetes semantics on top of it. The REST layer, admission and watch come with the
//! rest of the apiserver issue.

// openraft's storage traits return its `StorageError`, which is large; the helpers that feed
// them return the same type rather than converting at every call.
pub mod access;
pub mod http;
pub mod member;
pub mod metrics;
pub mod patch;
pub mod quota;
#[allow(clippy::result_large_err)]
pub mod raft;
pub mod registry;
pub mod watch;

#[cfg(test)]
mod hostile_input;
