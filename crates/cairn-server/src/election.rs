//! etcd's v3election `Election` service over the bundled election plugin (`plugins/election`).
//!
//! Campaigning is one plugin call through the log; a candidate that does not lead at once waits
//! on this member's apply path ([`waiting_line`]) until its key heads the line, and one that
//! gives up first withdraws. Leader and Observe read the line from this member's kernel.

use cairn_bundled::ELECTION;
use cairn_kernel::plugin::prefix_range;
use cairn_kernel::{Event, KeyValue, Revision};
use cairn_proto::v3electionpb as pb;
use cairn_proto::v3electionpb::election_server::{Election, ElectionServer};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::node::SharedNode;
use crate::recipe_call::{AnswerBytes, Called, JsonBytes, UndoOnDrop, call};
use crate::status::invalid_argument;
use crate::waiting_line;

/// etcd's message for a proclamation by a candidate that no longer stands.
const NOT_LEADER: &str = "election: not leader";
/// etcd's message for asking the leader of an election nobody stands in.
const NO_LEADER: &str = "election: no leader";
/// Leader changes an Observe stream buffers for a slow client.
const OBSERVE_BUFFERED: usize = 16;

#[derive(Serialize)]
struct CampaignInput<'a> {
    name: JsonBytes<'a>,
    lease: i64,
    value: JsonBytes<'a>,
}

#[derive(Deserialize)]
struct CampaignOutput {
    key: AnswerBytes,
    rev: Revision,
    leader: bool,
}

#[derive(Serialize)]
struct ProclaimInput<'a> {
    key: JsonBytes<'a>,
    rev: Revision,
    value: JsonBytes<'a>,
}

#[derive(Serialize)]
struct ResignInput<'a> {
    key: JsonBytes<'a>,
    rev: Revision,
}

#[derive(Deserialize)]
struct Empty {}

#[derive(Clone)]
pub struct ElectionRecipe {
    node: SharedNode,
}

impl ElectionRecipe {
    pub fn server(node: SharedNode) -> ElectionServer<ElectionRecipe> {
        ElectionServer::new(ElectionRecipe { node })
    }

    async fn resign(&self, key: &[u8], rev: Revision) -> Result<Revision, Status> {
        let input = ResignInput {
            key: JsonBytes(key),
            rev,
        };
        let called: Called<serde_json::Value> =
            call(&self.node, &ELECTION, "resign", &input, refused).await?;
        Ok(called.revision)
    }
}

/// The status for a reason the election plugin returned.
fn refused(reason: String) -> Status {
    if reason == NOT_LEADER {
        return Status::failed_precondition(reason);
    }
    invalid_argument(reason)
}

fn leader_key(leader: Option<pb::LeaderKey>) -> Result<pb::LeaderKey, Status> {
    leader.ok_or_else(|| invalid_argument("\"leader\" field must be provided"))
}

#[tonic::async_trait]
impl Election for ElectionRecipe {
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let request = request.into_inner();
        if request.name.is_empty() {
            return Err(invalid_argument("an election needs a name"));
        }
        let input = CampaignInput {
            name: JsonBytes(&request.name),
            lease: request.lease,
            value: JsonBytes(&request.value),
        };
        let Called {
            output: candidate,
            revision,
        } = call::<CampaignOutput>(&self.node, &ELECTION, "campaign", &input, refused).await?;
        let key = Vec::from(candidate.key);
        let revision = if candidate.leader {
            revision
        } else {
            let withdrawing = {
                let (recipe, key, rev) = (self.clone(), key.clone(), candidate.rev);
                UndoOnDrop::new(async move {
                    if let Err(status) = recipe.resign(&key, rev).await {
                        // Its lease ending will withdraw it instead.
                        let key = String::from_utf8_lossy(&key);
                        tracing::debug!(%key, reason = %status.message(), "could not withdraw a candidate");
                    }
                })
            };
            let revision = waiting_line::wait_for_turn(
                &self.node,
                &waiting_line::prefix(&request.name),
                &key,
                candidate.rev,
                revision,
                "election: the lease ended while campaigning",
            )
            .await?;
            withdrawing.keep();
            revision
        };
        Ok(Response::new(pb::CampaignResponse {
            header: self.node.header(revision),
            leader: Some(pb::LeaderKey {
                name: request.name,
                key,
                rev: candidate.rev,
                lease: request.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let request = request.into_inner();
        let leader = leader_key(request.leader)?;
        let input = ProclaimInput {
            key: JsonBytes(&leader.key),
            rev: leader.rev,
            value: JsonBytes(&request.value),
        };
        let called: Called<Empty> =
            call(&self.node, &ELECTION, "proclaim", &input, refused).await?;
        Ok(Response::new(pb::ProclaimResponse {
            header: self.node.header(called.revision),
        }))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let name = request.into_inner().name;
        self.node.prepare_read(false).await?;
        let kernel = self.node.replica.kernel().read().await;
        let leader = waiting_line::read(&kernel, &waiting_line::prefix(&name))?
            .into_iter()
            .next()
            .ok_or_else(|| Status::not_found(NO_LEADER))?;
        Ok(Response::new(pb::LeaderResponse {
            header: self.node.header(kernel.revision()),
            kv: Some(convert::key_value(leader)),
        }))
    }

    type ObserveStream = ReceiverStream<Result<pb::LeaderResponse, Status>>;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let prefix = waiting_line::prefix(&request.into_inner().name);
        let (out, responses) = mpsc::channel(OBSERVE_BUFFERED);
        tokio::spawn(observe(self.node.clone(), prefix, out));
        Ok(Response::new(ReceiverStream::new(responses)))
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let leader = leader_key(request.into_inner().leader)?;
        let revision = self.resign(&leader.key, leader.rev).await?;
        Ok(Response::new(pb::ResignResponse {
            header: self.node.header(revision),
        }))
    }
}

/// Sends the leader of the line under `prefix` whenever it changes (a new leader, or a new value
/// proclaimed), until the client goes. Proclamations applied together are sent as the last.
async fn observe(
    node: SharedNode,
    prefix: Vec<u8>,
    out: mpsc::Sender<Result<pb::LeaderResponse, Status>>,
) {
    let range = prefix_range(&prefix);
    let mut sent: Option<(Vec<u8>, Revision)> = None;
    loop {
        let in_line = |event: &Event| range.contains(&event.kv.key);
        let change = waiting_line::wait_until(&node, 0, in_line, |kernel| {
            let leader: Option<KeyValue> = waiting_line::read(kernel, &prefix)?.into_iter().next();
            Ok(leader
                .filter(|kv| sent.as_ref() != Some(&(kv.key.clone(), kv.mod_revision)))
                .map(|kv| (kv, kernel.revision())))
        });
        let response = tokio::select! {
            change = change => change,
            () = out.closed() => return,
        };
        let response = response.map(|(kv, revision)| {
            sent = Some((kv.key.clone(), kv.mod_revision));
            pb::LeaderResponse {
                header: node.header(revision),
                kv: Some(convert::key_value(kv)),
            }
        });
        let failed = response.is_err();
        if out.send(response).await.is_err() || failed {
            return;
        }
    }
}
