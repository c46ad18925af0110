//! Member and cluster IDs.
//!
//! Derived, not random, so the same command line restarts the same member and a member added
//! later can work out its own ID: a member's ID hashes the cluster token and its peer URLs; the
//! cluster's hashes the token alone.

use sha2::{Digest, Sha256};

pub fn member_id(token: &str, peer_urls: &[String]) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut parts: Vec<&[u8]> = vec![b"member", token.as_bytes()];
    parts.extend(urls.iter().map(|url| url.as_bytes()));
    hash_u64(&parts)
}

pub fn cluster_id(token: &str) -> u64 {
    hash_u64(&[b"cluster", token.as_bytes()])
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
        let urls = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = member_id("t", &urls(&["http://a:1", "http://a:2"]));
        assert_eq!(a, member_id("t", &urls(&["http://a:2", "http://a:1"])));
        assert_ne!(a, member_id("t", &urls(&["http://b:1"])));
        assert_ne!(a, member_id("u", &urls(&["http://a:1", "http://a:2"])));
        assert_ne!(cluster_id("t"), cluster_id("u"));
    }
}
