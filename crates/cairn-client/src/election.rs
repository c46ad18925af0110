//! Elections: the bundled election recipe through etcd's v3election service.
//!
//! A candidate stands under a [`Session`]'s lease; the first to stand leads until it resigns or
//! its session ends, and the next in line leads after it, so there is at most one leader at any
//! revision.

use cairn_proto::etcdserverpb::Compare;
use cairn_proto::mvccpb::KeyValue;
use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use tokio_stream::{Stream, StreamExt};
use tonic::Code;
use tonic::transport::Channel;

use crate::{Client, Error, Session};

/// This client's leadership of an election.
#[derive(Debug)]
pub struct Leadership {
    channel: Channel,
    leader: LeaderKey,
}

/// An election's leader and the value it proclaims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub key: String,
    pub value: Vec<u8>,
    /// The leader key's create revision, which identifies the leadership.
    pub rev: i64,
    pub lease: i64,
}

impl From<KeyValue> for Leader {
    fn from(kv: KeyValue) -> Leader {
        Leader {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value: kv.value,
            rev: kv.create_revision,
            lease: kv.lease,
        }
    }
}

impl Client {
    /// Stands in election `name` under `session` and waits until leading, proclaiming `value`.
    pub async fn campaign(
        &self,
        name: &str,
        value: impl Into<Vec<u8>>,
        session: &Session,
    ) -> Result<Leadership, Error> {
        let leader = ElectionClient::new(self.channel.clone())
            .campaign(CampaignRequest {
                name: name.as_bytes().to_vec(),
                lease: session.lease(),
                value: value.into(),
            })
            .await?
            .into_inner()
            .leader
            .ok_or_else(|| Error::Protocol {
                plugin: "election",
                reason: "a campaign answered without a leader key".to_string(),
            })?;
        Ok(Leadership {
            channel: self.channel.clone(),
            leader,
        })
    }

    /// The current leader of election `name`, if any.
    pub async fn leader(&self, name: &str) -> Result<Option<Leader>, Error> {
        let answer = ElectionClient::new(self.channel.clone())
            .leader(LeaderRequest {
                name: name.as_bytes().to_vec(),
            })
            .await;
        match answer {
            Ok(response) => Ok(response.into_inner().kv.map(Leader::from)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// The leader of election `name` now (once there is one), then at every change.
    pub async fn observe(
        &self,
        name: &str,
    ) -> Result<impl Stream<Item = Result<Leader, Error>> + use<>, Error> {
        let changes = ElectionClient::new(self.channel.clone())
            .observe(LeaderRequest {
                name: name.as_bytes().to_vec(),
            })
            .await?
            .into_inner();
        Ok(changes.map(|change| Ok(Leader::from(change?.kv.unwrap_or_default()))))
    }
}

impl Leadership {
    /// The key that exists while this leadership lasts.
    pub fn key(&self) -> String {
        String::from_utf8_lossy(&self.leader.key).into_owned()
    }

    /// The leader key's create revision.
    pub fn rev(&self) -> i64 {
        self.leader.rev
    }

    /// The Txn comparison that holds only while this leadership lasts.
    pub fn fence(&self) -> Compare {
        crate::created_at(self.leader.key.clone(), self.leader.rev)
    }

    /// Replaces the value this leader proclaims; FAILED_PRECONDITION once it no longer leads.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        ElectionClient::new(self.channel.clone())
            .proclaim(ProclaimRequest {
                leader: Some(self.leader.clone()),
                value: value.into(),
            })
            .await?;
        Ok(())
    }

    /// Gives up leadership; the next candidate leads.
    pub async fn resign(self) -> Result<(), Error> {
        ElectionClient::new(self.channel)
            .resign(ResignRequest {
                leader: Some(self.leader),
            })
            .await?;
        Ok(())
    }
}
