//! The one client of the univrs apiserver, for `ui`, the controllers and the node agent.
//!
//! - [`kubeconfig`]: the kubeconfig univrs writes and reads — the cluster's servers (every
//!   member, in the `univrs.io/servers` extension kubectl ignores), its CA, and the user's
//!   credential (a token, or a client-go exec plugin running `ui token`).
//! - [`credential`]: bearer tokens from that credential, cached until they are about to
//!   expire, minted again when a server refuses one (401).
//! - [`failover`]: a tower service under `kube::Client` that sends each request to the member
//!   that answered last and, when one cannot be connected to (so it never saw the request),
//!   to the next: long-lived watches and lease renewals survive a member's death.
//! - [`resource`]: the univrs kinds as `kube::Resource`s (`Kube<S>`), typed.
//! - [`retry`]: one conflict-retry helper ([`retry::modify`]), one backoff, one
//!   [`retry::poll_until`].
//! - [`events`]: the one event recorder (`events.k8s.io/v1` Events, repeats counted in a
//!   series, rate-limited) of the controllers and the node agent.
//! - [`blocking`]: the same client for commands that are not async (`ui get`, `ui apply`, …),
//!   on the same kubeconfig, credentials and failover.

pub mod blocking;
pub mod credential;
pub mod events;
pub mod failover;
pub mod kubeconfig;
pub mod resource;
pub mod retry;

pub use failover::connect;
pub use kubeconfig::Kubeconfig;
pub use resource::{Kube, api_all, api_in, is_conflict, is_not_found};
