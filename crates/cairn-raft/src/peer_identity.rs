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
        "member {member:x} of cluster {cluster:x} refused a peer request without Cairn's cluster \
         headers ({header} missing or malformed): the sender is not a member of this Cairn version"
    )]
    Unlabelled {
        member: MemberId,
        cluster: ClusterId,
        header: &'static str,
    },
}

impl Refusal {
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
    pub(crate) fn admit(&self, metadata: &MetadataMap) -> Result<MemberId, Refusal> {
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
        Ok(from)
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

/// Lets a repeated warning through once per [`REFUSAL_LOG_INTERVAL`] and counts the ones held
/// back; its state is one instant and one count, whatever the number of senders.
#[derive(Default)]
pub(crate) struct Throttle {
    state: Mutex<ThrottleState>,
}

#[derive(Default)]
struct ThrottleState {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// Whether to log now, and if so how many warnings were held back since the last one.
    pub(crate) fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().expect("throttle poisoned");
        let now = Instant::now();
        if state
            .last
            .is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_INTERVAL)
        {
            state.held_back += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.held_back))
    }
}

/// Logs, throttled, that this member refused a peer.
pub(crate) fn log_refused(throttle: &Throttle, refusal: &Refusal) {
    if let Some(held_back) = throttle.admit() {
        tracing::warn!(held_back, "refused a peer: {refusal}");
    }
}

/// Logs, throttled, that a peer refused this member, with the peer's own words.
pub(crate) fn log_refused_by(throttle: &Throttle, url: &str, reason: &str) {
    if let Some(held_back) = throttle.admit() {
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
        assert_eq!(ME.admit(&stamped(peer, 0xa)), Ok(0xb));
    }

    #[test]
    fn a_request_from_another_cluster_is_refused_naming_both() {
        let other = PeerIdentity {
            cluster_id: 0xc2,
            member_id: 0xa,
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
    fn a_throttle_lets_one_warning_through_and_counts_the_rest() {
        let throttle = Throttle::default();
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), None);
        assert_eq!(throttle.admit(), None);
        throttle.state.lock().unwrap().last = Some(Instant::now() - REFUSAL_LOG_INTERVAL);
        assert_eq!(throttle.admit(), Some(2));
    }
}
