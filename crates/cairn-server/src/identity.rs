//! Member and cluster IDs.
//!
//! Derived, not random, so the same command line restarts the same member: the member ID hashes
//! the cluster token and the member's name, the cluster ID hashes the token and the member IDs.

use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub client_urls: Vec<String>,
}

impl Identity {
    pub fn single_member(token: &str, name: &str, client_urls: Vec<String>) -> Identity {
        let member_id = hash_u64(&[b"member", token.as_bytes(), name.as_bytes()]);
        let cluster_id = hash_u64(&[b"cluster", token.as_bytes(), &member_id.to_be_bytes()]);
        Identity {
            member_id,
            cluster_id,
            name: name.to_string(),
            client_urls,
        }
    }
}

fn hash_u64(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    // Zero means "no member" in etcd's API.
    u64::from_be_bytes(digest[..8].try_into().expect("sha256 is 32 bytes")).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = Identity::single_member("t", "a", vec![]);
        assert_eq!(a, Identity::single_member("t", "a", vec![]));
        assert_ne!(
            a.member_id,
            Identity::single_member("t", "b", vec![]).member_id
        );
        assert_ne!(
            a.cluster_id,
            Identity::single_member("u", "a", vec![]).cluster_id
        );
    }
}
