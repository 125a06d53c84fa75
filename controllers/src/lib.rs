//! The controller runtime (watch → cache → queue → reconcile) and the controllers: workload,
//! scheduler, node lifecycle, reputation, credits, garbage collector (design.md §6).
//!
//! Empty so far: the foundation issue creates the crate so the workspace has its final shape;
//! the controllers issue fills it. Controllers reach state only through the HTTP API, never by
//! importing apiserver internals.
