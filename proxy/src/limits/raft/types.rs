//! What the Raft group agrees on: the commands that change the counter
//! ledger (grants and settlements, stamped with the proposer's clock so
//! every replica applies them alike) and the type configuration openraft
//! is built with.

use serde::{Deserialize, Serialize};

use crate::limits::store::{CounterKey, Settlement};

/// A change to the ledger, as written in the Raft log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// [`CounterStore::grant`](crate::limits::store::CounterStore::grant).
    Grant {
        holder: String,
        key: CounterKey,
        want: u64,
        at_least: u64,
        ttl_ms: i64,
        now_ms: i64,
    },
    /// [`CounterStore::settle`](crate::limits::store::CounterStore::settle).
    Settle {
        holder: String,
        /// The holder's batch number (see `CounterStore::settle`).
        #[serde(default)]
        seq: u64,
        batch: Vec<Settlement>,
        now_ms: i64,
    },
}

/// A command as proposed: with an id that stays the same when a write is
/// retried (after a timeout, or a leader change, it may already be in the
/// log), so the state machine applies it once and answers the retry with
/// the first answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub command: Command,
}

/// What applying a command answered (a grant's result; zero otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub granted: u64,
    pub used: u64,
}

openraft::declare_raft_types!(
    /// Sluice's Raft: counter commands, nodes named by their address.
    pub TypeConfig:
        D = Request,
        R = Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Vec<u8>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft handle of this configuration.
pub type Raft = openraft::Raft<TypeConfig>;
/// A storage error of this configuration.
pub type StorageError = openraft::StorageError<u64>;
/// A log id of this configuration.
pub type LogId = openraft::LogId<u64>;
