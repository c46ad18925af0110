//! The kernel's on-disk layout in RocksDB.
//!
//! Four column families:
//! - `history`: every change ever made and not yet compacted, keyed by its revision
//!   (`main` then `sub`, both big-endian, so iteration is in revision order). A value is either a
//!   put (the key's full state after the change) or a tombstone.
//! - `meta`: the store's revision, compacted revision and applied log index, written in the same
//!   batch as the changes they describe, so a crash leaves them consistent.
//! - `lease`: every granted lease not yet revoked, keyed by its id (big-endian), holding its TTL.
//!   Which keys a lease holds is not stored: each key's newest change names its lease.
//! - `plugin`: deployed plugins, `r` + name holding the record, and their components, `b` +
//!   sha256 holding the bytes: the kernel's reserved keyspace, out of reach of client ranges.
//!
//! Every batch is one RocksDB write: a command's changes reach disk all together or not at all.

use std::path::Path;

use rocksdb::{
    ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};

use crate::error::StorageError;
use crate::plugin::{Digest, PluginRecord};
use crate::types::{Event, EventKind, INITIAL_REVISION, KeyValue, LeaseId, Revision};

const HISTORY: &str = "history";
const META: &str = "meta";
const LEASE: &str = "lease";
const PLUGIN: &str = "plugin";
const FAMILIES: [&str; 4] = [HISTORY, META, LEASE, PLUGIN];
const PLUGIN_RECORD: u8 = b'r';
const PLUGIN_BLOB: u8 = b'b';

const META_REVISION: &[u8] = b"revision";
const META_COMPACT_REVISION: &[u8] = b"compact_revision";
const META_APPLIED_INDEX: &[u8] = b"applied_index";
const META_TIME: &[u8] = b"time_ms";
const META_REPLICATION: &[u8] = b"replication";

/// etcd's compacted revision before the first compaction.
pub(crate) const NEVER_COMPACTED: Revision = -1;

/// Where a change sits in history: its main revision and its position within that revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ChangeId {
    pub main: Revision,
    pub sub: u32,
}

impl ChangeId {
    const ENCODED_LEN: usize = 12;

    fn encode(self) -> [u8; Self::ENCODED_LEN] {
        assert!(self.main > 0, "revisions are positive: {self:?}");
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<ChangeId, StorageError> {
        let bytes: [u8; Self::ENCODED_LEN] = bytes
            .try_into()
            .map_err(|_| corrupt(HISTORY, "revision key of wrong length"))?;
        let main = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")) as i64;
        let sub = u32::from_be_bytes(bytes[8..].try_into().expect("4 bytes"));
        if main <= 0 {
            return Err(corrupt(HISTORY, format!("non-positive revision {main}")));
        }
        Ok(ChangeId { main, sub })
    }
}

/// One change to one key, as stored in history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The key's state after a put; its `mod_revision` is the change's main revision.
    Put(KeyValue),
    Delete {
        key: Vec<u8>,
    },
}

impl Change {
    pub fn key(&self) -> &[u8] {
        match self {
            Change::Put(kv) => &kv.key,
            Change::Delete { key } => key,
        }
    }

    /// The change as watchers see it, made at `revision`. A delete shows only the key and the
    /// revision that deleted it, as in etcd.
    pub fn into_event(self, revision: Revision, prev_kv: Option<KeyValue>) -> Event {
        match self {
            Change::Put(kv) => Event {
                kind: EventKind::Put,
                kv,
                prev_kv,
            },
            Change::Delete { key } => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key,
                    mod_revision: revision,
                    ..KeyValue::default()
                },
                prev_kv,
            },
        }
    }

    const TAG_PUT: u8 = 1;
    const TAG_DELETE: u8 = 2;

    /// `tag | key_len u32 | key` then, for a put, `create_revision i64 | version i64 | lease i64 |
    /// value`, integers big-endian.
    fn encode(&self) -> Vec<u8> {
        let key = self.key();
        let mut out = Vec::with_capacity(1 + 4 + key.len() + 24 + self.value_len());
        let key_len = u32::try_from(key.len()).expect("keys are bounded by the request size limit");
        match self {
            Change::Put(kv) => {
                out.push(Self::TAG_PUT);
                out.extend_from_slice(&key_len.to_be_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&kv.create_revision.to_be_bytes());
                out.extend_from_slice(&kv.version.to_be_bytes());
                out.extend_from_slice(&kv.lease.to_be_bytes());
                out.extend_from_slice(&kv.value);
            }
            Change::Delete { .. } => {
                out.push(Self::TAG_DELETE);
                out.extend_from_slice(&key_len.to_be_bytes());
                out.extend_from_slice(key);
            }
        }
        out
    }

    fn value_len(&self) -> usize {
        match self {
            Change::Put(kv) => kv.value.len(),
            Change::Delete { .. } => 0,
        }
    }

    fn decode(id: ChangeId, bytes: &[u8]) -> Result<Change, StorageError> {
        let mut reader = Reader { bytes };
        let tag = reader.take(1)?[0];
        let key_len = u32::from_be_bytes(reader.array()?) as usize;
        let key = reader.take(key_len)?.to_vec();
        match tag {
            Self::TAG_PUT => {
                let create_revision = i64::from_be_bytes(reader.array()?);
                let version = i64::from_be_bytes(reader.array()?);
                let lease: LeaseId = i64::from_be_bytes(reader.array()?);
                let value = reader.bytes.to_vec();
                if create_revision <= 0 || create_revision > id.main || version <= 0 {
                    return Err(corrupt(HISTORY, format!("impossible put at {id:?}")));
                }
                Ok(Change::Put(KeyValue {
                    key,
                    create_revision,
                    mod_revision: id.main,
                    version,
                    value,
                    lease,
                }))
            }
            Self::TAG_DELETE if reader.bytes.is_empty() => Ok(Change::Delete { key }),
            _ => Err(corrupt(HISTORY, format!("unknown change at {id:?}"))),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], StorageError> {
        if self.bytes.len() < len {
            return Err(corrupt(HISTORY, "truncated change"));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StorageError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
}

fn blob_key(digest: Digest) -> Vec<u8> {
    let mut key = vec![PLUGIN_BLOB];
    key.extend_from_slice(&digest.0);
    key
}

fn corrupt(family: &'static str, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        family,
        reason: reason.into(),
    }
}

/// The store-wide state kept in `meta`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub revision: Revision,
    pub compact_revision: Revision,
    pub applied_index: u64,
    /// The newest log entry time applied: the clock plugin calls see never goes back.
    pub time_ms: u64,
    /// Opaque to the kernel: whatever the layer feeding it commands needs to resume after a
    /// restart, kept atomic with the state it describes.
    pub replication: Vec<u8>,
}

/// A column family, named for the snapshot format, which carries records of both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    History,
    Meta,
    Lease,
    Plugin,
}

impl Family {
    const ALL: [Family; 4] = [Family::History, Family::Meta, Family::Lease, Family::Plugin];

    fn name(self) -> &'static str {
        match self {
            Family::History => HISTORY,
            Family::Meta => META,
            Family::Lease => LEASE,
            Family::Plugin => PLUGIN,
        }
    }
}

/// One raw key-value pair of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub family: Family,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// How hard a commit works to survive a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync before returning: the commit survives power loss.
    Fsync,
    /// Written to RocksDB's log but not fsynced: survives a process crash, not power loss. For
    /// callers that can replay the commands from a durable log of their own.
    Buffered,
}

pub(crate) struct Storage {
    db: DB,
}

impl Storage {
    pub fn open(path: &Path) -> Result<Storage, StorageError> {
        std::fs::create_dir_all(path).map_err(|source| StorageError::DataDir {
            path: path.to_path_buf(),
            source,
        })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(DBCompressionType::Lz4);
        let families = FAMILIES.map(|name| {
            let mut family = Options::default();
            family.set_compression_type(DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(name, family)
        });
        let db = DB::open_cf_descriptors(&options, path, families)?;
        Ok(Storage { db })
    }

    pub fn meta(&self) -> Result<Meta, StorageError> {
        let read = |name: &[u8]| -> Result<Option<[u8; 8]>, StorageError> {
            match self.db.get_cf(self.family(META), name)? {
                None => Ok(None),
                Some(bytes) => bytes.as_slice().try_into().map(Some).map_err(|_| {
                    corrupt(
                        META,
                        format!("{} is not 8 bytes", String::from_utf8_lossy(name)),
                    )
                }),
            }
        };
        Ok(Meta {
            revision: read(META_REVISION)?.map_or(INITIAL_REVISION, i64::from_be_bytes),
            compact_revision: read(META_COMPACT_REVISION)?
                .map_or(NEVER_COMPACTED, i64::from_be_bytes),
            applied_index: read(META_APPLIED_INDEX)?.map_or(0, u64::from_be_bytes),
            time_ms: read(META_TIME)?.map_or(0, u64::from_be_bytes),
            replication: self
                .db
                .get_cf(self.family(META), META_REPLICATION)?
                .unwrap_or_default(),
        })
    }

    /// The changes from revision `from` on, in revision order.
    pub fn history_from(
        &self,
        from: Revision,
    ) -> impl Iterator<Item = Result<(ChangeId, Change), StorageError>> + '_ {
        let start = ChangeId { main: from, sub: 0 }.encode();
        self.db
            .iterator_cf(
                self.family(HISTORY),
                IteratorMode::From(&start, Direction::Forward),
            )
            .map(|item| {
                let (key, value) = item?;
                let id = ChangeId::decode(&key)?;
                Ok((id, Change::decode(id, &value)?))
            })
    }

    pub fn change(&self, id: ChangeId) -> Result<Option<Change>, StorageError> {
        match self.db.get_pinned_cf(self.family(HISTORY), id.encode())? {
            None => Ok(None),
            Some(bytes) => Change::decode(id, &bytes).map(Some),
        }
    }

    pub fn stage_change(&self, batch: &mut WriteBatch, id: ChangeId, change: &Change) {
        batch.put_cf(self.family(HISTORY), id.encode(), change.encode());
    }

    pub fn stage_removal(&self, batch: &mut WriteBatch, id: ChangeId) {
        batch.delete_cf(self.family(HISTORY), id.encode());
    }

    /// Every granted lease and its TTL, in id order.
    pub fn leases(&self) -> impl Iterator<Item = Result<(LeaseId, i64), StorageError>> + '_ {
        self.db
            .iterator_cf(self.family(LEASE), IteratorMode::Start)
            .map(|item| {
                let (key, value) = item?;
                let id: [u8; 8] = key[..]
                    .try_into()
                    .map_err(|_| corrupt(LEASE, "lease id of wrong length"))?;
                let ttl: [u8; 8] = value[..]
                    .try_into()
                    .map_err(|_| corrupt(LEASE, "lease TTL of wrong length"))?;
                Ok((i64::from_be_bytes(id), i64::from_be_bytes(ttl)))
            })
    }

    /// Stages a grant (`Some(ttl)`) or a revocation (`None`) of lease `id`.
    pub fn stage_lease(&self, batch: &mut WriteBatch, id: LeaseId, ttl: Option<i64>) {
        let family = self.family(LEASE);
        match ttl {
            Some(ttl) => batch.put_cf(family, id.to_be_bytes(), ttl.to_be_bytes()),
            None => batch.delete_cf(family, id.to_be_bytes()),
        }
    }

    /// Every deployed plugin's record, in name order.
    pub fn plugin_records(&self) -> Result<Vec<PluginRecord>, StorageError> {
        self.db
            .prefix_iterator_cf(self.family(PLUGIN), [PLUGIN_RECORD])
            .take_while(|item| {
                item.as_ref()
                    .map_or(true, |(key, _)| key[0] == PLUGIN_RECORD)
            })
            .map(|item| {
                let (key, value) = item?;
                postcard::from_bytes(&value).map_err(|e| {
                    corrupt(
                        PLUGIN,
                        format!("record {:?}: {e}", String::from_utf8_lossy(&key[1..])),
                    )
                })
            })
            .collect()
    }

    /// The component stored under `digest`.
    pub fn plugin_blob(&self, digest: Digest) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.family(PLUGIN), blob_key(digest))?)
    }

    /// Stages a deployed plugin's record (`Some`) or its removal (`None`).
    pub fn stage_plugin(&self, batch: &mut WriteBatch, name: &str, record: Option<&PluginRecord>) {
        let mut key = vec![PLUGIN_RECORD];
        key.extend_from_slice(name.as_bytes());
        match record {
            Some(record) => batch.put_cf(
                self.family(PLUGIN),
                key,
                postcard::to_allocvec(record).expect("a plugin record always encodes"),
            ),
            None => batch.delete_cf(self.family(PLUGIN), key),
        }
    }

    /// Stages a component's bytes (`Some`) or their removal (`None`).
    pub fn stage_blob(&self, batch: &mut WriteBatch, digest: Digest, bytes: Option<&[u8]>) {
        match bytes {
            Some(bytes) => batch.put_cf(self.family(PLUGIN), blob_key(digest), bytes),
            None => batch.delete_cf(self.family(PLUGIN), blob_key(digest)),
        }
    }

    pub fn stage_meta(&self, batch: &mut WriteBatch, meta: &Meta) {
        let family = self.family(META);
        batch.put_cf(family, META_REVISION, meta.revision.to_be_bytes());
        batch.put_cf(
            family,
            META_COMPACT_REVISION,
            meta.compact_revision.to_be_bytes(),
        );
        batch.put_cf(family, META_APPLIED_INDEX, meta.applied_index.to_be_bytes());
        batch.put_cf(family, META_TIME, meta.time_ms.to_be_bytes());
        batch.put_cf(family, META_REPLICATION, &meta.replication);
    }

    pub fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(durability == Durability::Fsync);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    /// Writes a consistent copy of everything written so far into `dir`, which must not exist.
    /// RocksDB hard-links its immutable files, so this costs little whatever the store's size.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// Every record of every family, family by family, in key order: the store's whole state
    /// in a form [`Storage::stage_record`] takes back.
    pub fn records(&self) -> impl Iterator<Item = Result<Record, StorageError>> + '_ {
        Family::ALL.into_iter().flat_map(move |family| {
            self.db
                .iterator_cf(
                    self.family(family.name()),
                    IteratorMode::From(&[], Direction::Forward),
                )
                .map(move |item| {
                    let (key, value) = item?;
                    Ok(Record {
                        family,
                        key: key.into_vec(),
                        value: value.into_vec(),
                    })
                })
        })
    }

    pub fn stage_record(&self, batch: &mut WriteBatch, record: &Record) {
        batch.put_cf(
            self.family(record.family.name()),
            &record.key,
            &record.value,
        );
    }

    /// Bytes on disk plus bytes in memtables: what etcd reports as the database size.
    pub fn size_bytes(&self) -> u64 {
        FAMILIES
            .iter()
            .map(|name| {
                let family = self.family(name);
                let property = |p: &str| {
                    self.db
                        .property_int_value_cf(family, p)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                };
                property("rocksdb.total-sst-files-size")
                    + property("rocksdb.cur-size-all-mem-tables")
            })
            .sum()
    }

    fn family(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_through_their_encoding() {
        let id = ChangeId { main: 9, sub: 3 };
        let put = Change::Put(KeyValue {
            key: b"k\0ey".to_vec(),
            create_revision: 4,
            mod_revision: 9,
            version: 2,
            value: b"\xffvalue".to_vec(),
            lease: 77,
        });
        let delete = Change::Delete {
            key: b"gone".to_vec(),
        };
        for change in [put, delete] {
            assert_eq!(Change::decode(id, &change.encode()).unwrap(), change);
        }
        assert_eq!(ChangeId::decode(&id.encode()).unwrap(), id);
    }

    #[test]
    fn change_ids_sort_by_revision_when_encoded() {
        let ids = [(1, 0), (1, 1), (2, 0), (256, 0), (256, 7), (1 << 40, 0)]
            .map(|(main, sub)| ChangeId { main, sub });
        let encoded: Vec<_> = ids.iter().map(|id| id.encode()).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
    }

    #[test]
    fn damaged_records_are_reported_not_trusted() {
        let id = ChangeId { main: 2, sub: 0 };
        assert!(Change::decode(id, &[Change::TAG_PUT, 0, 0, 0, 9, b'k']).is_err());
        assert!(Change::decode(id, &[7, 0, 0, 0, 0]).is_err());
        assert!(ChangeId::decode(&[0; 5]).is_err());
    }
}
