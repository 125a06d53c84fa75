//! One file per command.

pub mod agent;
pub mod apiserver;
pub mod apply;
pub mod cluster;
pub mod config;
pub mod controllers;
pub mod credits;
pub mod dashboard;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod down;
pub mod events;
pub mod exec;
pub mod get;
pub mod identity;
pub mod image;
pub mod init;
pub mod logs;
pub mod mcp;
pub mod network;
pub mod node;
pub mod reputation;
pub mod scale;
pub mod seal;
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

impl Context {
    /// The user this directory's key acts for, when it is an AI agent's (`[agent]` in
    /// `config.toml`, written by `ui agent init`).
    pub fn agent_of(&self) -> anyhow::Result<Option<crate::config::AgentOf>> {
        Ok(crate::config::Config::load(&self.dirs)?.agent)
    }

    /// Whose objects this directory's key writes: the agent's user in an agent's directory,
    /// else the identity's own did.
    pub fn acting_for(&self) -> anyhow::Result<api::identity::Did> {
        match self.agent_of()? {
            Some(of) => Ok(of.owner),
            None => Ok(crate::keystore::load_public(&self.dirs)?.did),
        }
    }

    /// Signs `obj` with `key` as of `at`: as its owner, or — in an agent's directory — on the
    /// agent's user's behalf under their AgentGrant (the object is then the user's, and its
    /// signature shows the agent wrote it). The one way `ui` signs a user's manifest.
    pub fn sign(
        &self,
        obj: &mut serde_json::Value,
        key: &dyn api::signing::Sign,
        at: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<api::signing::Verified> {
        match self.agent_of()? {
            Some(of) => api::signing::sign_on_behalf(obj, key, &of.owner, &of.grant, at),
            None => api::signing::sign(obj, key, at),
        }
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
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
