//! A digest of history, so replicas can check they hold the same state (etcd's HashKV).

use sha2::{Digest, Sha256};

use crate::error::{Error, KvError};
use crate::kernel::Kernel;
use crate::storage::{ChangeId, Family};
use crate::types::Revision;

impl Kernel {
    /// Hashes every change in history up to `revision` (0: the newest) and returns the hash with
    /// the compacted revision. Replicas that applied the same commands give the same hash; the
    /// value itself means nothing outside Cairn.
    pub fn hash_kv(&self, revision: Revision) -> Result<(u32, Revision), Error> {
        assert!(
            !self.has_uncommitted(),
            "history hashed with applied commands not yet committed"
        );
        let revision = if revision <= 0 {
            self.revision()
        } else {
            revision
        };
        if revision > self.revision() {
            return Err(KvError::FutureRevision.into());
        }
        if revision <= self.compact_revision() {
            return Err(KvError::Compacted.into());
        }
        let mut hasher = Sha256::new();
        for record in self.storage().records() {
            let record = record?;
            if record.family != Family::History {
                break;
            }
            if ChangeId::decode(&record.key)?.main > revision {
                break;
            }
            hasher.update((record.key.len() as u64).to_be_bytes());
            hasher.update(&record.key);
            hasher.update((record.value.len() as u64).to_be_bytes());
            hasher.update(&record.value);
        }
        let digest = hasher.finalize();
        let hash = u32::from_be_bytes(digest[..4].try_into().expect("sha256 is 32 bytes"));
        Ok((hash, self.compact_revision()))
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::Durability;
    use crate::types::{Command, CompactRequest, PutRequest};
    use crate::{Kernel, KvError, Limits};

    fn kernel_after(dir: &std::path::Path, puts: &[(&str, &str)]) -> Kernel {
        let mut kernel = Kernel::open(dir, Limits::default()).unwrap();
        for (index, (key, value)) in puts.iter().enumerate() {
            kernel
                .apply(
                    index as u64 + 1,
                    &Command::Put(PutRequest::new(*key, *value)),
                )
                .unwrap();
        }
        kernel.commit(Durability::Buffered).unwrap();
        kernel
    }

    #[test]
    fn equal_histories_hash_equal_and_different_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = kernel_after(&dir.path().join("a"), &[("x", "1"), ("y", "2")]);
        let b = kernel_after(&dir.path().join("b"), &[("x", "1"), ("y", "2")]);
        let c = kernel_after(&dir.path().join("c"), &[("x", "1"), ("y", "3")]);
        assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
        assert_ne!(a.hash_kv(0).unwrap(), c.hash_kv(0).unwrap());
        assert_eq!(
            a.hash_kv(2).unwrap(),
            c.hash_kv(2).unwrap(),
            "equal up to revision 2"
        );
        assert!(matches!(
            a.hash_kv(9),
            Err(crate::Error::Kv(KvError::FutureRevision))
        ));
    }

    #[test]
    fn compacted_revisions_cannot_be_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let mut kernel = kernel_after(dir.path(), &[("x", "1"), ("x", "2"), ("x", "3")]);
        kernel
            .apply(4, &Command::Compact(CompactRequest { revision: 3 }))
            .unwrap();
        kernel.commit(Durability::Buffered).unwrap();
        assert!(matches!(
            kernel.hash_kv(3),
            Err(crate::Error::Kv(KvError::Compacted))
        ));
        assert_eq!(kernel.hash_kv(0).unwrap().1, 3);
    }
}
