//! The univrs resource model: object metadata, the kinds of `univrs.io/v1`, identities,
//! quantities, validation, manifest decoding and the canonical signing payload.
//!
//! This crate does no I/O. Everything here is a pure function of its inputs (the clock
//! included: callers pass the time in), so it can be used unchanged by the apiserver, the
//! controllers, the CLI and tests.

pub mod credits;
mod de;
pub mod health;
pub mod identity;
pub mod kinds;
pub mod ledger;
pub mod manifest;
pub mod meta;
pub mod object;
pub mod quantity;
pub mod schema;
pub mod sealed;
pub mod selector;
pub mod signing;
pub mod token;
pub mod unknown_fields;
pub mod validation;

/// The API group of every univrs kind.
pub const GROUP: &str = "univrs.io";
/// The API version of every univrs kind.
pub const VERSION: &str = "v1";
/// `group/version`, as written in `apiVersion`.
pub const API_VERSION: &str = "univrs.io/v1";

pub use object::{KindInfo, KindSpec, Object, Scope};
pub use validation::{FieldError, FieldPath};
