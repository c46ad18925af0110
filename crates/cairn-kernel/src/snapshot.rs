//! Whole-state snapshots: how a replica that fell too far behind, or a new cluster restored from
//! a backup, gets the kernel's state without replaying its history of commands.
//!
//! A snapshot is taken in two steps so the kernel never stops for it: [`Kernel::checkpoint`]
//! freezes the committed state in a RocksDB checkpoint (hard links, cheap), then
//! [`Checkpoint::write_to`] streams it out at leisure. The stream is self-checking:
//!
//! ```text
//! MAGIC
//! { family u8 (1 history, 2 meta, 3 lease, 4 plugin) | key_len u32 | key | value_len u32 | value }*
//! 0u8 | zeros up to a multiple of 512 bytes | sha256 of every byte before it
//! ```
//!
//! The padding keeps etcd's convention for backups (a whole number of 512-byte blocks followed
//! by their sha256), which `etcdctl snapshot save` checks before it keeps a download.
//!
//! [`restore`] rebuilds a kernel from such a stream in a fresh directory and refuses a stream that
//! is truncated, damaged or not a snapshot, leaving nothing behind.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rocksdb::WriteBatch;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::error::StorageError;
use crate::kernel::Kernel;
use crate::storage::{Durability, Family, Record, Storage};
use crate::validate::Limits;

const MAGIC: &[u8] = b"CAIRN-SNAPSHOT\x01";
const TAG_END: u8 = 0;
const TAG_HISTORY: u8 = 1;
const TAG_META: u8 = 2;
const TAG_LEASE: u8 = 3;
const TAG_PLUGIN: u8 = 4;
/// Restore writes in batches of about this size, so memory stays bounded whatever the snapshot.
const RESTORE_BATCH_BYTES: usize = 8 << 20;
/// The records and end tag are padded to a multiple of this, as etcd's backups are.
const BLOCK_BYTES: u64 = 512;
/// Longest key or value a snapshot may hold; anything longer means a damaged stream.
const FIELD_BYTES_MAX: u32 = 64 << 20;

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("not a Cairn snapshot (bad header)")]
    NotASnapshot,
    #[error("damaged snapshot: {0}")]
    Damaged(&'static str),
    #[error("restore target {0} already exists")]
    TargetExists(PathBuf),
}

/// A frozen copy of a kernel's committed state, removed from disk when dropped.
pub struct Checkpoint {
    dir: PathBuf,
}

impl Kernel {
    /// Freezes the committed state into `dir`, which must not exist yet. Everything applied must
    /// be committed first: a snapshot holds only what is on disk.
    pub fn checkpoint(&self, dir: &Path) -> Result<Checkpoint, StorageError> {
        assert!(
            !self.has_uncommitted(),
            "checkpoint taken with applied commands not yet committed"
        );
        self.storage().checkpoint(dir)?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
        })
    }
}

impl Checkpoint {
    /// Streams the frozen state to `out`; returns the bytes written.
    pub fn write_to(&self, out: &mut impl Write) -> Result<u64, SnapshotError> {
        let storage = Storage::open(&self.dir)?;
        let mut out = HashingWriter::new(out);
        out.write_all(MAGIC)?;
        for record in storage.records() {
            let record = record?;
            let tag = match record.family {
                Family::History => TAG_HISTORY,
                Family::Meta => TAG_META,
                Family::Lease => TAG_LEASE,
                Family::Plugin => TAG_PLUGIN,
            };
            out.write_all(&[tag])?;
            for field in [&record.key, &record.value] {
                let len = u32::try_from(field.len())
                    .ok()
                    .filter(|len| *len <= FIELD_BYTES_MAX)
                    .ok_or(SnapshotError::Damaged("record field too long"))?;
                out.write_all(&len.to_be_bytes())?;
                out.write_all(field)?;
            }
        }
        out.write_all(&[TAG_END])?;
        let padding = padding_after(out.written);
        out.write_all(&vec![0u8; padding])?;
        let digest = out.hasher.clone().finalize();
        out.inner.write_all(&digest)?;
        out.inner.flush()?;
        Ok(out.written + digest.len() as u64)
    }
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), %error, "could not remove a checkpoint");
        }
    }
}

/// Builds a kernel in `dir` (which must not exist) from the snapshot `input`. On any error the
/// directory is removed again, so a failed restore leaves nothing half-written.
pub fn restore(input: &mut impl Read, dir: &Path, limits: Limits) -> Result<Kernel, SnapshotError> {
    if dir.exists() {
        return Err(SnapshotError::TargetExists(dir.to_path_buf()));
    }
    let restored = write_records(input, dir).and_then(|()| Ok(Kernel::open(dir, limits)?));
    if restored.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    restored
}

fn write_records(input: &mut impl Read, dir: &Path) -> Result<(), SnapshotError> {
    let storage = Storage::open(dir)?;
    let mut input = HashingReader::new(input);
    let mut magic = [0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| SnapshotError::NotASnapshot)?;
    if magic != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let mut batch = WriteBatch::default();
    loop {
        let family = match input.byte()? {
            TAG_END => break,
            TAG_HISTORY => Family::History,
            TAG_META => Family::Meta,
            TAG_LEASE => Family::Lease,
            TAG_PLUGIN => Family::Plugin,
            _ => return Err(SnapshotError::Damaged("unknown record tag")),
        };
        let key = input.field()?;
        let value = input.field()?;
        storage.stage_record(&mut batch, &Record { family, key, value });
        if batch.size_in_bytes() >= RESTORE_BATCH_BYTES {
            storage.write(std::mem::take(&mut batch), Durability::Buffered)?;
        }
    }
    let mut padding = vec![0u8; padding_after(input.read)];
    input
        .read_exact(&mut padding)
        .map_err(|_| SnapshotError::Damaged("truncated"))?;
    if padding.iter().any(|&byte| byte != 0) {
        return Err(SnapshotError::Damaged("bad padding"));
    }
    let expected = input.hasher.clone().finalize();
    let mut digest = [0u8; 32];
    input
        .inner
        .read_exact(&mut digest)
        .map_err(|_| SnapshotError::Damaged("truncated checksum"))?;
    if digest[..] != expected[..] {
        return Err(SnapshotError::Damaged("checksum mismatch"));
    }
    // A synced write syncs RocksDB's log, and with it every buffered batch before it.
    storage.write(batch, Durability::Fsync)?;
    Ok(())
}

/// Zero bytes that bring a stream of `len` bytes to a whole number of blocks.
fn padding_after(len: u64) -> usize {
    ((BLOCK_BYTES - len % BLOCK_BYTES) % BLOCK_BYTES) as usize
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buf)?;
        self.hasher.update(&*buf);
        self.read += buf.len() as u64;
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, SnapshotError> {
        let mut byte = [0u8; 1];
        self.read_exact(&mut byte)
            .map_err(|_| SnapshotError::Damaged("truncated"))?;
        Ok(byte[0])
    }

    fn field(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let mut len = [0u8; 4];
        self.read_exact(&mut len)
            .map_err(|_| SnapshotError::Damaged("truncated"))?;
        let len = u32::from_be_bytes(len);
        if len > FIELD_BYTES_MAX {
            return Err(SnapshotError::Damaged("record field too long"));
        }
        let mut field = vec![0u8; len as usize];
        self.read_exact(&mut field)
            .map_err(|_| SnapshotError::Damaged("truncated"))?;
        Ok(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, CompactRequest, KeyRange, PutRequest, RangeRequest};

    fn kernel_with_history(dir: &Path) -> Kernel {
        let mut kernel = Kernel::open(dir, Limits::default()).unwrap();
        for (index, (key, value)) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")]
            .into_iter()
            .enumerate()
        {
            kernel
                .apply(index as u64 + 1, &Command::Put(PutRequest::new(key, value)))
                .unwrap();
        }
        kernel
            .apply(5, &Command::Compact(CompactRequest { revision: 3 }))
            .unwrap();
        kernel.set_replication_state(b"log position".to_vec());
        kernel.commit(Durability::Buffered).unwrap();
        kernel
    }

    fn snapshot_bytes(kernel: &Kernel, dir: &Path) -> Vec<u8> {
        let checkpoint = kernel.checkpoint(&dir.join("checkpoint")).unwrap();
        let mut bytes = Vec::new();
        let written = checkpoint.write_to(&mut bytes).unwrap();
        assert_eq!(written, bytes.len() as u64);
        assert_eq!(
            written % BLOCK_BYTES,
            32,
            "blocks and a sha256, as etcd's backups"
        );
        bytes
    }

    fn everything(kernel: &Kernel) -> Vec<crate::types::KeyValue> {
        kernel
            .range(&RangeRequest::new(KeyRange::From(b"\0".to_vec())))
            .unwrap()
            .kvs
    }

    #[test]
    fn a_restored_kernel_equals_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let original = kernel_with_history(&dir.path().join("original"));
        let bytes = snapshot_bytes(&original, dir.path());
        assert!(
            !dir.path().join("checkpoint").exists(),
            "the checkpoint is removed once dropped"
        );

        let restored = restore(
            &mut &bytes[..],
            &dir.path().join("restored"),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(everything(&restored), everything(&original));
        assert_eq!(restored.revision(), original.revision());
        assert_eq!(restored.compact_revision(), original.compact_revision());
        assert_eq!(restored.applied_index(), original.applied_index());
        assert_eq!(restored.replication_state(), b"log position");
        let mut old = RangeRequest::new(KeyRange::Key(b"a".to_vec()));
        old.revision = 3;
        assert_eq!(restored.range(&old).unwrap(), original.range(&old).unwrap());
        old.revision = 2;
        assert!(
            restored.range(&old).is_err(),
            "compacted history stays compacted"
        );
    }

    #[test]
    fn damaged_or_truncated_snapshots_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let original = kernel_with_history(&dir.path().join("original"));
        let bytes = snapshot_bytes(&original, dir.path());
        let target = dir.path().join("restored");

        let mut flipped = bytes.clone();
        flipped[MAGIC.len() + 10] ^= 0x40;
        let truncated = &bytes[..bytes.len() - 7];
        for damaged in [&flipped[..], truncated, b"not a snapshot at all"] {
            let result = restore(&mut &damaged[..], &target, Limits::default());
            assert!(result.is_err(), "a damaged snapshot was restored");
            assert!(!target.exists(), "a failed restore left files behind");
        }
    }

    #[test]
    fn restore_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let original = kernel_with_history(&dir.path().join("original"));
        let bytes = snapshot_bytes(&original, dir.path());
        let result = restore(
            &mut &bytes[..],
            &dir.path().join("original"),
            Limits::default(),
        );
        assert!(matches!(result, Err(SnapshotError::TargetExists(_))));
    }
}
