//! `ui dashboard`: a read-only web page of the cluster, served on loopback by a process that
//! reads the cluster as its user (as `kubectl proxy` does: the browser holds no key or token).
//!
//! - [`view`]: the core, pure: from the objects and members to the page's data (JSON).
//! - [`follow`]: the watches (one list-then-watch per kind) that keep the objects, and make the
//!   view again after each change.
//! - [`serve`]: HTTP on loopback: the embedded page (`assets/`: HTML, plain JavaScript and CSS,
//!   no build step), the view, its changes as Server-Sent Events, and the guards.

pub mod follow;
pub mod serve;
pub mod view;
