//! One file per command.

pub mod apiserver;
pub mod apply;
pub mod cluster;
pub mod config;
pub mod controllers;
pub mod credits;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod down;
pub mod get;
pub mod identity;
pub mod init;
pub mod logs;
pub mod network;
pub mod node;
pub mod reputation;
pub mod scale;
pub mod sign;
pub mod status;
pub mod token;
pub mod unlock;
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
    /// Exit with this code, for commands whose codes say more than yes or no (`ui diff`:
    /// 1 for differences, 2 for an error).
    Exit(u8),
}

impl Outcome {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Failure => 1,
            Outcome::Exit(code) => code,
        }
    }
}

/// Prints an error that ends a command, with its causes.
pub fn print_error(e: &anyhow::Error) {
    eprintln!("error: {e:#}");
}
