//! Member and cluster IDs.
//!
//! A member's ID is derived, not random, so the same command line restarts the same member and a
//! `member add` can work out the ID of the member it adds: it hashes the cluster token and the
//! member's peer URLs. A cluster's ID is derived once, when the cluster begins, from the token and
//! the IDs of its initial members, as etcd derives its own, so clusters on the default token still
//! differ; a cluster bootstrapped from a backup mixes in the backup's checksum, so it differs from
//! the cluster the backup came from. A member that joins later asks the cluster's members for the
//! ID. Once Raft has run in a data directory, the ID kept there is the member's for good.

use std::time::{Duration, Instant};

use anyhow::bail;
use cairn_raft::{Bootstrap, ClusterId, ClusterView, MemberId};
use sha2::{Digest, Sha256};

/// How long a joining member keeps asking the members `--initial-cluster` names which cluster
/// it joins, while none answers.
const JOIN_WAIT: Duration = Duration::from_secs(30);
/// How long it keeps asking once a member has answered without listing it, for a `member add`
/// that committed an instant ago and has yet to reach the member asked.
const NOT_LISTED_WAIT: Duration = Duration::from_secs(5);
/// How long one question may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
const ASK_PAUSE: Duration = Duration::from_millis(300);

pub fn member_id(token: &str, peer_urls: &[String]) -> MemberId {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut parts: Vec<&[u8]> = vec![b"member", token.as_bytes()];
    parts.extend(urls.iter().map(|url| url.as_bytes()));
    hash_u64(&parts)
}

/// The ID of a cluster that begins with `members`, restored from the backup whose checksum is
/// `restored_from` if it was.
pub fn new_cluster_id(
    token: &str,
    members: impl IntoIterator<Item = MemberId>,
    restored_from: Option<&[u8; 32]>,
) -> ClusterId {
    let mut ids: Vec<MemberId> = members.into_iter().collect();
    ids.sort_unstable();
    let ids: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    let mut parts: Vec<&[u8]> = vec![b"cluster", token.as_bytes(), &ids];
    if let Some(digest) = restored_from {
        parts.extend([b"restored-from".as_slice(), digest.as_slice()]);
    }
    hash_u64(&parts)
}

/// The ID of every cluster on `token` from the builds that derived it from the token alone.
/// Their data directories keep no ID, and their members know no other.
fn token_only_cluster_id(token: &str) -> ClusterId {
    hash_u64(&[b"cluster", token.as_bytes()])
}

/// Whether cluster `id` began on a build from before cluster IDs were kept and peer requests
/// named their cluster: its members, upgraded one at a time, may still send requests that name
/// none.
pub fn began_before_cluster_headers(token: &str, id: ClusterId) -> bool {
    id == token_only_cluster_id(token)
}

/// Where this member's cluster ID comes from on a start.
pub struct Origin<'a> {
    pub token: &'a str,
    pub bootstrap: &'a Bootstrap,
    pub member_id: MemberId,
    /// This member's own peer URLs.
    pub peer_urls: &'a [String],
    /// The peer URLs `--initial-cluster` names, this member's among them or not.
    pub initial_cluster_urls: &'a [String],
}

/// The ID of the cluster the member in `data_dir` belongs to: the one kept there once Raft has
/// run there; otherwise the new cluster's, or, when joining, the one the cluster's members answer
/// with, kept there before Raft first runs.
pub async fn cluster_id(
    data_dir: &std::path::Path,
    origin: Origin<'_>,
) -> anyhow::Result<ClusterId> {
    if cairn_raft::holds_log(data_dir) {
        if let Some(id) = cairn_raft::stored_cluster_id(data_dir)? {
            return Ok(id);
        }
        let id = token_only_cluster_id(origin.token);
        tracing::warn!(
            cluster_id = format_args!("{id:x}"),
            "this data directory was written by an older Cairn, which derived the cluster ID \
             from the token alone; keeping that ID"
        );
        cairn_raft::store_cluster_id(data_dir, id)?;
        return Ok(id);
    }
    let id = match origin.bootstrap {
        Bootstrap::New(members) => {
            let restored_from = cairn_raft::restored_from(data_dir)?;
            new_cluster_id(
                origin.token,
                members.keys().copied(),
                restored_from.as_ref(),
            )
        }
        Bootstrap::Existing => joined_cluster_id(&origin).await?,
    };
    cairn_raft::store_cluster_id(data_dir, id)?;
    Ok(id)
}

/// Asks the other members `--initial-cluster` names which cluster this member joins; fails
/// unless one of them lists this member.
async fn joined_cluster_id(origin: &Origin<'_>) -> anyhow::Result<ClusterId> {
    let others: Vec<&String> = origin
        .initial_cluster_urls
        .iter()
        .filter(|url| !origin.peer_urls.contains(url))
        .collect();
    if others.is_empty() {
        bail!(
            "--initial-cluster-state existing: --initial-cluster names no other member to ask \
             which cluster this member joins; give it the cluster's members, as for etcd"
        );
    }
    let started = Instant::now();
    let mut deadline = started + JOIN_WAIT;
    let mut not_listed: Option<(String, ClusterView)> = None;
    let mut unanswered = String::new();
    loop {
        for url in &others {
            match cairn_raft::identify(url, ASK_TIMEOUT).await {
                Ok(view) if view.members.iter().any(|(id, _)| *id == origin.member_id) => {
                    return Ok(view.cluster_id);
                }
                Ok(view) => {
                    if not_listed.is_none() {
                        deadline = deadline.min(Instant::now() + NOT_LISTED_WAIT);
                    }
                    not_listed = Some((url.to_string(), view));
                }
                Err(error) => unanswered = error.to_string(),
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(ASK_PAUSE).await;
    }
    let Some((url, view)) = not_listed else {
        bail!(
            "no member named in --initial-cluster answered within {JOIN_WAIT:?}, so this member \
             cannot learn which cluster it joins (last: {unanswered})"
        );
    };
    let under_another_id = view.members.iter().find(|(_, urls)| {
        urls.iter()
            .any(|their_url| origin.peer_urls.contains(their_url))
    });
    let hint = match under_another_id {
        Some((id, _)) => format!(
            "the cluster has member {id:x} at this member's peer URL: this member's \
             --initial-cluster-token differs from the one the cluster was started with"
        ),
        None => "add it first with `etcdctl member add`".to_string(),
    };
    bail!(
        "this member ({:x}, peer URLs {}) is not a member of cluster {:x}, which the member at \
         {url} serves: {hint}",
        origin.member_id,
        origin.peer_urls.join(","),
        view.cluster_id,
    )
}

fn hash_u64(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    // Zero means "no member" and "no cluster" in etcd's API.
    u64::from_be_bytes(digest[..8].try_into().expect("sha256 is 32 bytes")).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn member_ids_are_stable_and_distinct() {
        let a = member_id("t", &urls(&["http://a:1", "http://a:2"]));
        assert_eq!(a, member_id("t", &urls(&["http://a:2", "http://a:1"])));
        assert_ne!(a, member_id("t", &urls(&["http://b:1"])));
        assert_ne!(a, member_id("u", &urls(&["http://a:1", "http://a:2"])));
    }

    #[test]
    fn cluster_ids_differ_by_token_membership_and_backup() {
        let x = member_id("t", &urls(&["http://x:1"]));
        let y = member_id("t", &urls(&["http://y:1"]));
        let one = new_cluster_id("t", [x], None);
        assert_eq!(one, new_cluster_id("t", [x], None));
        assert_ne!(
            one,
            new_cluster_id("t", [y], None),
            "same token, other member"
        );
        assert_ne!(one, new_cluster_id("u", [x], None), "other token");
        assert_eq!(
            new_cluster_id("t", [x, y], None),
            new_cluster_id("t", [y, x], None),
            "the order members are named in"
        );
        assert_ne!(one, new_cluster_id("t", [x], Some(&[7; 32])), "restored");
        assert_ne!(
            new_cluster_id("t", [x], Some(&[7; 32])),
            new_cluster_id("t", [x], Some(&[8; 32]))
        );
        assert_ne!(one, token_only_cluster_id("t"));
    }
}
