//! The cluster a data directory belongs to, kept beside the member's state.
//!
//! A member learns its cluster's ID once, before Raft first starts: from the initial membership
//! when it bootstraps a cluster, or from the cluster's members when it joins one. It keeps the
//! ID in `cluster-id`, so every later start stays in that cluster whatever its flags say, as
//! etcd keeps its cluster ID in its data directory. `cairn snapshot restore` leaves the backup's
//! checksum in `restored-from`, so a cluster bootstrapped from a backup gets an ID of its own even
//! when its token and peer URLs are the original cluster's.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::peer_identity::ClusterId;
use crate::state_machine::StateDirs;

const CLUSTER_ID_FILE: &str = "cluster-id";
const RESTORED_FROM_FILE: &str = "restored-from";

#[derive(Debug, thiserror::Error)]
pub enum ClusterFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds {found:?}, not {what}: it is damaged; restore it or the whole directory")]
    Damaged {
        path: PathBuf,
        found: String,
        what: &'static str,
    },
}

/// The cluster ID `data_dir` was stamped with, if any.
pub fn stored_cluster_id(data_dir: &Path) -> Result<Option<ClusterId>, ClusterFileError> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    let Some(text) = read_if_there(&path)? else {
        return Ok(None);
    };
    match u64::from_str_radix(text.trim(), 16) {
        Ok(id) if id != 0 => Ok(Some(id)),
        _ => Err(ClusterFileError::Damaged {
            path,
            found: text,
            what: "a cluster ID in hexadecimal",
        }),
    }
}

/// Stamps `data_dir` as belonging to cluster `id`, durably, before Raft first starts there.
pub fn store_cluster_id(data_dir: &Path, id: ClusterId) -> Result<(), ClusterFileError> {
    assert_ne!(id, 0, "zero means no cluster in etcd's API");
    replace_durably(data_dir, CLUSTER_ID_FILE, format!("{id:x}\n").as_bytes()).map_err(|source| {
        ClusterFileError::Write {
            path: data_dir.join(CLUSTER_ID_FILE),
            source,
        }
    })
}

/// The checksum of the backup `data_dir` was restored from, if it was.
pub fn restored_from(data_dir: &Path) -> Result<Option<[u8; 32]>, ClusterFileError> {
    let path = data_dir.join(RESTORED_FROM_FILE);
    let Some(text) = read_if_there(&path)? else {
        return Ok(None);
    };
    let digest = decode_hex_32(text.trim()).ok_or_else(|| ClusterFileError::Damaged {
        path,
        found: text.clone(),
        what: "a sha256 in hexadecimal",
    })?;
    Ok(Some(digest))
}

/// Records, durably, that `data_dir` holds the state of the backup whose checksum is `digest`.
pub(crate) fn mark_restored(data_dir: &Path, digest: &[u8; 32]) -> std::io::Result<()> {
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    replace_durably(data_dir, RESTORED_FROM_FILE, format!("{hex}\n").as_bytes())
}

/// Whether Raft has run in `data_dir`: it holds a log, from this build or an older one.
pub fn holds_log(data_dir: &Path) -> bool {
    StateDirs::new(data_dir).log.exists()
}

fn read_if_there(path: &Path) -> Result<Option<String>, ClusterFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ClusterFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn decode_hex_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(digest)
}

/// Replaces `dir/name` with `contents` so that a crash leaves either the old file or the new
/// one, never a torn one: write a temporary file, sync it, rename it over, sync the directory.
pub(crate) fn replace_durably(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_cluster_id_reads_back_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stored_cluster_id(dir.path()).unwrap(), None);
        store_cluster_id(dir.path(), 0x7d1c_02b8_3bb6_6f89).unwrap();
        assert_eq!(
            stored_cluster_id(dir.path()).unwrap(),
            Some(0x7d1c_02b8_3bb6_6f89)
        );
        std::fs::write(dir.path().join(CLUSTER_ID_FILE), "not hex").unwrap();
        assert!(matches!(
            stored_cluster_id(dir.path()),
            Err(ClusterFileError::Damaged { .. })
        ));
    }

    #[test]
    fn a_restore_mark_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(restored_from(dir.path()).unwrap(), None);
        let digest = [0xab; 32];
        mark_restored(dir.path(), &digest).unwrap();
        assert_eq!(restored_from(dir.path()).unwrap(), Some(digest));
    }
}
