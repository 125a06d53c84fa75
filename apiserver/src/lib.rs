//! The univrs apiserver: Kubernetes-compatible REST (axum), admission, Raft (openraft) over
//! durable storage, and watch fan-out (design.md §5).
//!
//! Empty so far: the foundation issue creates the crate so the workspace has its final shape;
//! the apiserver issue fills it. Nothing here pretends to work yet.
