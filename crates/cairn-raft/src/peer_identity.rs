//! Which cluster and which members a stream between members belongs to.
//!
//! Member IDs derive from the cluster token and peer URLs, and many clusters share a token (the
//! default one), so an ID alone cannot tell clusters apart: a mistyped `member add` would point
//! one cluster's leader at a member of another cluster, which would then take its log. So every
//! stream and call between members names, in its headers, the cluster it belongs to, the member
//! sending and the member it is for, as etcd's peer messages carry `X-Etcd-Cluster-ID`. A member
//! refuses one that names another cluster, or another member, before it reads a message; it
//! refuses the calls of a sender that is not a member (removed, or never added) one by one; and
//! both ends say so in their logs, a few times a minute at most.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::metadata::{MetadataMap, MetadataValue};

use crate::types::MemberId;

const CLUSTER_HEADER: &str = "cairn-cluster-id";
const FROM_HEADER: &str = "cairn-from";
const TO_HEADER: &str = "cairn-to";

/// A cluster's ID: derived once, when the cluster begins, and kept in each member's data
/// directory.
pub type ClusterId = u64;

/// This member as its peers must know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub cluster_id: ClusterId,
    pub member_id: MemberId,
    /// Whether requests without cluster headers are taken: only in a cluster that began on a
    /// build from before them, whose members, while they are upgraded one at a time, send
    /// none.
    pub takes_unlabelled: bool,
}

/// Who sent a request this member admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    Member(MemberId),
    /// A member on a build from before cluster headers, which names no one (see
    /// [`PeerIdentity::takes_unlabelled`]).
    Unlabelled,
}

/// Why a member refused a peer's stream or call. Each names both sides, so either log alone
/// tells an operator which clusters or members were mixed up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "member {member:x} of cluster {ours:x} refused a request from member {from:x} of cluster \
         {theirs:x}: the two belong to different clusters"
    )]
    OtherCluster {
        member: MemberId,
        ours: ClusterId,
        from: MemberId,
        theirs: ClusterId,
    },
    #[error(
        "member {member:x} of cluster {cluster:x} refused a request from member {from:x} meant for \
         member {to:x}: another member now answers at that peer URL"
    )]
    OtherMember {
        member: MemberId,
        cluster: ClusterId,
        from: MemberId,
        to: MemberId,
    },
    #[error(
        "member {member:x} of cluster {cluster:x} refused a request from member {from:x}: it is \
         not a member of the cluster (removed, or never added)"
    )]
    NotAMember {
        member: MemberId,
        cluster: ClusterId,
        from: MemberId,
    },
    #[error(
        "member {member:x} of cluster {cluster:x} refused a peer request without a valid {header} \
         header: the sender runs a Cairn without cluster headers, or is not a Cairn member"
    )]
    Unlabelled {
        member: MemberId,
        cluster: ClusterId,
        header: &'static str,
    },
}

impl Refusal {
    /// The member refused, as its request named itself; 0 when it did not.
    fn sender(&self) -> MemberId {
        match self {
            Refusal::OtherCluster { from, .. }
            | Refusal::OtherMember { from, .. }
            | Refusal::NotAMember { from, .. } => *from,
            Refusal::Unlabelled { .. } => 0,
        }
    }

    /// The status a refused stream or call ends with; its code tells the sender that this
    /// member refused it, not that the request failed.
    pub(crate) fn into_status(self) -> tonic::Status {
        tonic::Status::failed_precondition(self.to_string())
    }
}

impl PeerIdentity {
    /// Labels a request from this member to member `to`.
    pub(crate) fn stamp(&self, metadata: &mut MetadataMap, to: MemberId) {
        for (header, value) in [
            (CLUSTER_HEADER, self.cluster_id),
            (FROM_HEADER, self.member_id),
            (TO_HEADER, to),
        ] {
            let value = MetadataValue::try_from(format!("{value:x}"))
                .expect("hexadecimal digits are a valid header value");
            metadata.insert(header, value);
        }
    }

    /// The sender of a request labelled by [`PeerIdentity::stamp`], if it is for this member of
    /// this cluster. Whether the sender is a member is for the caller to judge: a member that is
    /// behind may not yet know a leader added after the membership it holds.
    pub(crate) fn admit(&self, metadata: &MetadataMap) -> Result<Sender, Refusal> {
        let unlabelled = [CLUSTER_HEADER, FROM_HEADER, TO_HEADER]
            .iter()
            .all(|name| metadata.get(*name).is_none());
        if unlabelled && self.takes_unlabelled {
            return Ok(Sender::Unlabelled);
        }
        let header = |name: &'static str| {
            metadata
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| u64::from_str_radix(value, 16).ok())
                .ok_or(Refusal::Unlabelled {
                    member: self.member_id,
                    cluster: self.cluster_id,
                    header: name,
                })
        };
        let (theirs, from, to) = (
            header(CLUSTER_HEADER)?,
            header(FROM_HEADER)?,
            header(TO_HEADER)?,
        );
        if theirs != self.cluster_id {
            return Err(Refusal::OtherCluster {
                member: self.member_id,
                ours: self.cluster_id,
                from,
                theirs,
            });
        }
        if to != self.member_id {
            return Err(Refusal::OtherMember {
                member: self.member_id,
                cluster: self.cluster_id,
                from,
                to,
            });
        }
        Ok(Sender::Member(from))
    }

    /// The refusal of a call from `from`, which this member does not know as a member.
    pub(crate) fn not_a_member(&self, from: MemberId) -> Refusal {
        Refusal::NotAMember {
            member: self.member_id,
            cluster: self.cluster_id,
            from,
        }
    }
}

/// How often a repeated refusal is logged: a member of another cluster retries several times a
/// second, and one line every few seconds says as much as all of them.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The most senders (or peers) a [`Throttle`] keeps apart; past it, it starts over, at the cost
/// of a line more for each.
const THROTTLED_KEYS_MAX: usize = 64;

/// Lets a repeated warning about the same `K` (a sender, a peer) through once per
/// [`REFUSAL_LOG_INTERVAL`] and counts the ones held back, so one noisy peer hides no other.
pub(crate) struct Throttle<K> {
    state: Mutex<HashMap<K, Held>>,
}

struct Held {
    last: Instant,
    held_back: u64,
}

impl<K> Default for Throttle<K> {
    fn default() -> Self {
        Throttle {
            state: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> Throttle<K> {
    /// Whether to log about `key` now, and if so how many warnings about it were held back
    /// since the last one.
    pub(crate) fn admit(&self, key: K) -> Option<u64> {
        let mut state = self.state.lock().expect("throttle poisoned");
        let now = Instant::now();
        if let Some(held) = state.get_mut(&key) {
            if now.duration_since(held.last) < REFUSAL_LOG_INTERVAL {
                held.held_back += 1;
                return None;
            }
            held.last = now;
            return Some(std::mem::take(&mut held.held_back));
        }
        if state.len() >= THROTTLED_KEYS_MAX {
            state.clear();
        }
        state.insert(
            key,
            Held {
                last: now,
                held_back: 0,
            },
        );
        Some(0)
    }
}

/// Logs, throttled per sender, that this member refused a peer.
pub(crate) fn log_refused(throttle: &Throttle<MemberId>, refusal: &Refusal) {
    if let Some(held_back) = throttle.admit(refusal.sender()) {
        tracing::warn!(held_back, "refused a peer: {refusal}");
    }
}

/// Logs, throttled per peer, that the peer at `url` refused this member, in the peer's words.
pub(crate) fn log_refused_by(throttle: &Throttle<String>, url: &str, reason: &str) {
    if let Some(held_back) = throttle.admit(url.to_string()) {
        tracing::warn!(
            held_back,
            peer = url,
            "a peer refused this member: {reason}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: PeerIdentity = PeerIdentity {
        cluster_id: 0xc1,
        member_id: 0xa,
        takes_unlabelled: false,
    };

    fn stamped(from: PeerIdentity, to: MemberId) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        from.stamp(&mut metadata, to);
        metadata
    }

    #[test]
    fn a_request_from_this_cluster_for_this_member_is_admitted() {
        let peer = PeerIdentity {
            member_id: 0xb,
            ..ME
        };
        assert_eq!(ME.admit(&stamped(peer, 0xa)), Ok(Sender::Member(0xb)));
    }

    #[test]
    fn a_request_from_another_cluster_is_refused_naming_both() {
        let other = PeerIdentity {
            cluster_id: 0xc2,
            ..ME
        };
        let refusal = ME.admit(&stamped(other, 0xa)).unwrap_err();
        assert!(matches!(
            refusal,
            Refusal::OtherCluster { theirs: 0xc2, .. }
        ));
        let text = refusal.to_string();
        assert!(
            text.contains("cluster c1") && text.contains("cluster c2"),
            "{text}"
        );
    }

    #[test]
    fn a_request_for_another_member_is_refused() {
        let peer = PeerIdentity {
            member_id: 0xb,
            ..ME
        };
        assert!(matches!(
            ME.admit(&stamped(peer, 0xd)),
            Err(Refusal::OtherMember { to: 0xd, .. })
        ));
    }

    #[test]
    fn a_request_without_headers_is_refused() {
        assert!(matches!(
            ME.admit(&MetadataMap::new()),
            Err(Refusal::Unlabelled {
                header: CLUSTER_HEADER,
                ..
            })
        ));
    }

    #[test]
    fn a_cluster_from_before_cluster_headers_takes_requests_without_them_but_not_others() {
        let upgrading = PeerIdentity {
            takes_unlabelled: true,
            ..ME
        };
        assert_eq!(upgrading.admit(&MetadataMap::new()), Ok(Sender::Unlabelled));
        let other = PeerIdentity {
            cluster_id: 0xc2,
            ..ME
        };
        assert!(matches!(
            upgrading.admit(&stamped(other, 0xa)),
            Err(Refusal::OtherCluster { .. })
        ));
    }

    #[test]
    fn a_throttle_lets_one_warning_per_sender_through_and_counts_the_rest() {
        let throttle = Throttle::default();
        assert_eq!(throttle.admit(1), Some(0));
        assert_eq!(throttle.admit(1), None);
        assert_eq!(
            throttle.admit(2),
            Some(0),
            "another sender is not held back"
        );
        assert_eq!(throttle.admit(1), None);
        throttle.state.lock().unwrap().get_mut(&1).unwrap().last =
            Instant::now() - REFUSAL_LOG_INTERVAL;
        assert_eq!(throttle.admit(1), Some(2));
    }

    #[test]
    fn a_throttle_keeps_a_bounded_number_of_senders() {
        let throttle = Throttle::default();
        for sender in 0..(3 * THROTTLED_KEYS_MAX as u64) {
            assert_eq!(throttle.admit(sender), Some(0));
        }
        assert!(throttle.state.lock().unwrap().len() <= THROTTLED_KEYS_MAX);
    }
}
