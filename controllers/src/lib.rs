//! The controllers (design.md §6): independent, watch-based, level-triggered loops that reach
//! state only through the apiserver's HTTP API, like any outside integration — never by
//! importing apiserver internals.
//!
//! The runtime is kube-runtime's (watcher → reflector cache → deduplicating queue → applier with
//! bounded concurrency and per-object backoff), wrapped by [`runtime`] with leader election
//! through a `Lease` ([`leader`]), Prometheus [`metrics`] and graceful shutdown. Decisions are
//! pure functions in their own modules (`scheduler::core`, `workload::plan`, …), each controller's
//! `mod.rs` is the thin async shell that does the I/O.

pub mod credits;
pub mod error;
pub mod gc;
pub mod leader;
pub mod manager;
pub mod members;
pub mod metrics;
pub mod nodelifecycle;
pub mod reputation;
pub mod runtime;
pub mod scheduler;
pub mod workload;

pub use error::Error;
