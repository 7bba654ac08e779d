//! The durable half of a replica's Raft state, in one redb file under
//! `dataDir`: the log (append, truncate, purge), the vote and the commit
//! index, and the last snapshot. The state machine (the counter ledger)
//! lives in memory and is rebuilt at start from the snapshot plus the
//! committed log after it; a snapshot is taken every
//! [`SNAPSHOT_EVERY`](super::SNAPSHOT_EVERY) entries so the log stays
//! short. Every write is a redb commit (fsync) before it is acknowledged.

// openraft's storage traits return its (large) StorageError; the helpers
// here return the same type rather than boxing and unboxing it.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::types::{Command, Request};
use super::types::{LogId, Reply, StorageError, TypeConfig};
use crate::limits::ledger::Ledger;

type Entry = openraft::Entry<TypeConfig>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The redb file, shared by the log store and the state machine.
#[derive(Clone)]
pub struct Disk {
    db: Arc<Database>,
}

fn io(error: impl ToString) -> StorageError {
    StorageIOError::write(AnyError::error(error.to_string())).into()
}

fn read_io(error: impl ToString) -> StorageError {
    StorageIOError::read(AnyError::error(error.to_string())).into()
}

impl Disk {
    /// Opens (creating) `dir/raft.redb`.
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("raft.redb");
        let db = Database::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(LOG).map_err(|e| e.to_string())?;
        tx.open_table(META).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(Self { db: Arc::new(db) })
    }

    fn get_meta<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StorageError> {
        let tx = self.db.begin_read().map_err(read_io)?;
        let table = tx.open_table(META).map_err(read_io)?;
        let Some(value) = table.get(name).map_err(read_io)? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(read_io)
    }

    /// Writes a meta value and commits (durable on return).
    async fn put_meta<T: Serialize>(
        &self,
        name: &'static str,
        value: &T,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(io)?;
        let db = self.db.clone();
        blocking(move || {
            let tx = db.begin_write().map_err(io)?;
            tx.open_table(META)
                .map_err(io)?
                .insert(name, bytes.as_slice())
                .map_err(io)?;
            tx.commit().map_err(io)
        })
        .await
    }

    fn read_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StorageError> {
        let tx = self.db.begin_read().map_err(read_io)?;
        let table = tx.open_table(LOG).map_err(read_io)?;
        let mut entries = Vec::new();
        for row in table.range(range).map_err(read_io)? {
            let (_, value) = row.map_err(read_io)?;
            entries.push(serde_json::from_slice(value.value()).map_err(read_io)?);
        }
        Ok(entries)
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        let tx = self.db.begin_read().map_err(read_io)?;
        let table = tx.open_table(LOG).map_err(read_io)?;
        let Some((_, value)) = table.last().map_err(read_io)? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(read_io)
    }

    /// Removes log entries in `range` and commits.
    async fn remove(&self, from: u64, to: u64, purged: Option<LogId>) -> Result<(), StorageError> {
        let db = self.db.clone();
        let purged = purged
            .map(|id| serde_json::to_vec(&id))
            .transpose()
            .map_err(io)?;
        blocking(move || {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut table = tx.open_table(LOG).map_err(io)?;
                table.retain_in(from..to, |_, _| false).map_err(io)?;
                if let Some(purged) = purged {
                    tx.open_table(META)
                        .map_err(io)?
                        .insert("purged", purged.as_slice())
                        .map_err(io)?;
                }
            }
            tx.commit().map_err(io)
        })
        .await
    }
}

/// Runs a redb transaction off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work).await.map_err(io)?
}

/// The log half (`RaftLogStorage`).
#[derive(Clone)]
pub struct LogStore {
    disk: Disk,
}

impl LogStore {
    pub fn new(disk: Disk) -> Self {
        Self { disk }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.disk.read_range(range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = self.disk.get_meta("purged")?;
        let last = self.disk.last_entry()?.map(|e| e.log_id).or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.disk.put_meta("vote", vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.disk.get_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.disk.put_meta("committed", &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.disk.get_meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        for entry in entries {
            rows.push((entry.log_id.index, serde_json::to_vec(&entry).map_err(io)?));
        }
        let db = self.disk.db.clone();
        let written = blocking(move || {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut table = tx.open_table(LOG).map_err(io)?;
                for (index, bytes) in &rows {
                    table.insert(*index, bytes.as_slice()).map_err(io)?;
                }
            }
            tx.commit().map_err(io)
        })
        .await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.disk.remove(log_id.index, u64::MAX, None).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.disk
            .remove(0, log_id.index.saturating_add(1), Some(log_id))
            .await
    }
}

/// The replicated state: the ledger and what was applied to it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub ledger: Ledger,
    /// Requests applied lately: id -> (answer, log index), so that a retried
    /// request is answered, not applied again.
    #[serde(default)]
    pub recent: HashMap<u64, (Reply, u64)>,
}

/// How many log entries a request id is remembered for (a retry comes
/// within seconds; thousands of entries are minutes of settlements).
const REMEMBER_ENTRIES: u64 = 50_000;

/// The last snapshot as kept on disk.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The state machine half (`RaftStateMachine`); reads of the ledger go
/// through the shared [`Machine`] lock (reports only, never admission).
#[derive(Clone)]
pub struct StateMachine {
    disk: Disk,
    pub machine: Arc<RwLock<Machine>>,
}

impl StateMachine {
    /// The state machine as of the last snapshot on disk (the committed
    /// log after it is applied again by openraft at start).
    pub fn open(disk: Disk) -> Result<Self, StorageError> {
        let machine = match disk.get_meta::<StoredSnapshot>("snapshot")? {
            Some(stored) => serde_json::from_slice(&stored.data).map_err(read_io)?,
            None => Machine::default(),
        };
        Ok(Self {
            disk,
            machine: Arc::new(RwLock::new(machine)),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Machine> {
        match self.machine.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Machine> {
        match self.machine.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_applied, membership) = {
            let machine = self.read();
            let data = serde_json::to_vec(&*machine).map_err(io)?;
            (data, machine.last_applied, machine.membership.clone())
        };
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, fastrand::u32(..)),
            None => format!("empty-{}", fastrand::u32(..)),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.disk.put_meta("snapshot", &stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(stored.data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        let machine = self.read();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut machine = self.write();
        let mut replies = Vec::new();
        for entry in entries {
            machine.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Reply::default(),
                EntryPayload::Membership(membership) => {
                    machine.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Reply::default()
                }
                EntryPayload::Normal(Request { id, command }) => {
                    let index = entry.log_id.index;
                    match machine.recent.get(&id) {
                        Some((reply, _)) => *reply,
                        None => {
                            let reply = apply(&mut machine.ledger, command);
                            machine.recent.insert(id, (reply, index));
                            if index % 1_000 == 0 {
                                machine
                                    .recent
                                    .retain(|_, (_, at)| *at + REMEMBER_ENTRIES > index);
                            }
                            reply
                        }
                    }
                }
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Vec<u8>>, StorageError> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Vec<u8>>,
    ) -> Result<(), StorageError> {
        let mut installed: Machine = serde_json::from_slice(&snapshot).map_err(read_io)?;
        installed.last_applied = meta.last_log_id;
        installed.membership = meta.last_membership.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: *snapshot,
        };
        self.disk.put_meta("snapshot", &stored).await?;
        *self.write() = installed;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .disk
            .get_meta::<StoredSnapshot>("snapshot")?
            .map(|stored| Snapshot {
                meta: stored.meta,
                snapshot: Box::new(stored.data),
            }))
    }
}

/// Applies one command to the ledger.
fn apply(ledger: &mut Ledger, command: Command) -> Reply {
    match command {
        Command::Grant {
            holder,
            key,
            want,
            at_least,
            ttl_ms,
            now_ms,
        } => {
            let (grant, _) = ledger.grant(&holder, &key, want, at_least, ttl_ms, now_ms);
            Reply {
                granted: grant.granted,
                used: grant.used,
            }
        }
        Command::Settle {
            holder,
            seq,
            batch,
            now_ms,
        } => {
            ledger.prune(now_ms);
            ledger.settle(&holder, seq, &batch, now_ms);
            Reply::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    /// A fresh store in a temporary directory (kept while the test runs).
    struct Fresh;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Fresh {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().map_err(io)?;
            let disk = Disk::open(dir.path()).map_err(io)?;
            Ok((dir, LogStore::new(disk.clone()), StateMachine::open(disk)?))
        }
    }

    /// openraft's own conformance suite for its storage traits.
    #[test]
    fn passes_the_openraft_storage_suite() {
        Suite::test_all(Fresh).unwrap();
    }

    /// The log, vote and last snapshot survive reopening the file.
    #[tokio::test]
    async fn state_survives_a_reopen() {
        use openraft::testing::blank_ent;
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new(3, 2);
        {
            let disk = Disk::open(dir.path()).unwrap();
            let mut log = LogStore::new(disk.clone());
            log.save_vote(&vote).await.unwrap();
            let rows: Vec<Entry> = (1..=3).map(|i| blank_ent::<TypeConfig>(3, 2, i)).collect();
            let mut sm = StateMachine::open(disk).unwrap();
            sm.apply(rows.clone()).await.unwrap();
            let db = log.disk.db.clone();
            let bytes: Vec<(u64, Vec<u8>)> = rows
                .iter()
                .map(|e| (e.log_id.index, serde_json::to_vec(e).unwrap()))
                .collect();
            let tx = db.begin_write().unwrap();
            {
                let mut table = tx.open_table(LOG).unwrap();
                for (i, b) in &bytes {
                    table.insert(*i, b.as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
            sm.build_snapshot().await.unwrap();
        }
        let disk = Disk::open(dir.path()).unwrap();
        let mut log = LogStore::new(disk.clone());
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(
            log.get_log_state()
                .await
                .unwrap()
                .last_log_id
                .unwrap()
                .index,
            3
        );
        let mut sm = StateMachine::open(disk).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0.unwrap().index, 3);
        assert!(sm.get_current_snapshot().await.unwrap().is_some());
    }
}
