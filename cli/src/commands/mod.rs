//! One file per command.

pub mod apiserver;
pub mod config;
pub mod identity;
pub mod init;
pub mod sign;
pub mod verify;
pub mod version;

use crate::paths::ConfigDirs;

/// What every command may use.
#[derive(Debug)]
pub struct Context {
    /// The user's configuration directory.
    pub dirs: ConfigDirs,
}

/// How a command ended, when it ran to completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Ran, but the answer is "no" (e.g. a signature did not verify): exit 1.
    Failure,
}
