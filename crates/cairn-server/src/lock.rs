//! The lock recipe's services: etcd's v3lock `Lock` and Cairn's `cairn.v1.Locks`, both over the
//! bundled lock plugin (`plugins/lock`).
//!
//! Joining a lock's line is one plugin call through the log. A contender that does not hold the
//! lock at once waits on this member's apply path ([`waiting_line`]) until its key heads the
//! line, so the client makes one call however long it waits. A waiter that gives up (its client
//! went away, or its timeout passed) leaves the line, as etcd's does, so that it does not hold
//! up the contenders behind it until its lease ends.

use std::time::Duration;

use cairn_bundled::LOCK;
use cairn_kernel::Revision;
use cairn_proto::cairn_v1 as cairn_pb;
use cairn_proto::cairn_v1::locks_server::{Locks, LocksServer};
use cairn_proto::v3lockpb as etcd_pb;
use cairn_proto::v3lockpb::lock_server::{Lock, LockServer};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::node::SharedNode;
use crate::recipe_call::{AnswerBytes, Called, JsonBytes, UndoOnDrop, call};
use crate::status::invalid_argument;
use crate::waiting_line;

#[derive(Serialize)]
struct AcquireInput<'a> {
    name: JsonBytes<'a>,
    lease: i64,
    #[serde(rename = "try")]
    only_if_free: bool,
}

#[derive(Deserialize)]
struct AcquireOutput {
    key: AnswerBytes,
    token: Revision,
    held: bool,
}

#[derive(Serialize)]
struct ReleaseInput<'a> {
    key: JsonBytes<'a>,
    token: Option<Revision>,
}

#[derive(Deserialize)]
struct ReleaseOutput {
    released: bool,
}

/// A lock its caller holds.
struct Held {
    key: Vec<u8>,
    token: Revision,
    /// The revision at which the caller holds it.
    revision: Revision,
}

#[derive(Clone)]
pub struct LockRecipe {
    node: SharedNode,
}

impl LockRecipe {
    pub fn etcd_server(node: SharedNode) -> LockServer<LockRecipe> {
        LockServer::new(LockRecipe { node })
    }

    pub fn cairn_server(node: SharedNode) -> LocksServer<LockRecipe> {
        LocksServer::new(LockRecipe { node })
    }

    /// Joins lock `name` under `lease` and waits until holding it, for at most `timeout`; with
    /// `only_if_free`, takes it only if nobody holds it (and gives `None` otherwise).
    async fn acquire(
        &self,
        name: &[u8],
        lease: i64,
        only_if_free: bool,
        timeout: Option<Duration>,
    ) -> Result<Option<Held>, Status> {
        if name.is_empty() {
            return Err(invalid_argument("a lock needs a name"));
        }
        let input = AcquireInput {
            name: JsonBytes(name),
            lease,
            only_if_free,
        };
        let Called {
            output: joined,
            revision,
        } = call::<AcquireOutput>(&self.node, &LOCK, "acquire", &input, invalid_argument).await?;
        let key = Vec::from(joined.key);
        if key.is_empty() {
            return Ok(None);
        }
        if joined.held {
            return Ok(Some(Held {
                key,
                token: joined.token,
                revision,
            }));
        }
        let leaving = {
            let (recipe, key, token) = (self.clone(), key.clone(), joined.token);
            UndoOnDrop::new(async move {
                if let Err(status) = recipe.release(&key, Some(token)).await {
                    // Its lease ending will take it out of the line instead.
                    let key = String::from_utf8_lossy(&key);
                    tracing::debug!(%key, reason = %status.message(), "could not leave a lock's line");
                }
            })
        };
        let prefix = waiting_line::prefix(name);
        let turn = waiting_line::wait_for_turn(
            &self.node,
            &prefix,
            &key,
            joined.token,
            revision,
            "lock: the lease ended while waiting for the lock",
        );
        let revision = match timeout {
            Some(timeout) => tokio::time::timeout(timeout, turn).await.map_err(|_| {
                let name = String::from_utf8_lossy(name);
                Status::deadline_exceeded(format!("lock {name:?} not acquired within {timeout:?}"))
            })??,
            None => turn.await?,
        };
        leaving.keep();
        Ok(Some(Held {
            key,
            token: joined.token,
            revision,
        }))
    }

    /// Deletes a lock's key (only the acquisition at `token`, when given).
    async fn release(
        &self,
        key: &[u8],
        token: Option<Revision>,
    ) -> Result<(bool, Revision), Status> {
        let input = ReleaseInput {
            key: JsonBytes(key),
            token,
        };
        let Called { output, revision } =
            call::<ReleaseOutput>(&self.node, &LOCK, "release", &input, invalid_argument).await?;
        Ok((output.released, revision))
    }
}

#[tonic::async_trait]
impl Lock for LockRecipe {
    async fn lock(
        &self,
        request: Request<etcd_pb::LockRequest>,
    ) -> Result<Response<etcd_pb::LockResponse>, Status> {
        let request = request.into_inner();
        let held = self
            .acquire(&request.name, request.lease, false, None)
            .await?
            .expect("a waiting acquire ends holding the lock");
        Ok(Response::new(etcd_pb::LockResponse {
            header: self.node.header(held.revision),
            key: held.key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<etcd_pb::UnlockRequest>,
    ) -> Result<Response<etcd_pb::UnlockResponse>, Status> {
        let (_, revision) = self.release(&request.into_inner().key, None).await?;
        Ok(Response::new(etcd_pb::UnlockResponse {
            header: self.node.header(revision),
        }))
    }
}

#[tonic::async_trait]
impl Locks for LockRecipe {
    async fn acquire(
        &self,
        request: Request<cairn_pb::AcquireRequest>,
    ) -> Result<Response<cairn_pb::AcquireResponse>, Status> {
        let request = request.into_inner();
        let timeout = (request.timeout_ms > 0).then(|| Duration::from_millis(request.timeout_ms));
        let held = LockRecipe::acquire(
            self,
            &request.name,
            request.lease,
            request.only_if_free,
            timeout,
        )
        .await?;
        let response = match held {
            Some(held) => cairn_pb::AcquireResponse {
                header: self.node.cairn_header(held.revision),
                acquired: true,
                key: held.key,
                fencing_token: held.token,
            },
            None => cairn_pb::AcquireResponse {
                header: self
                    .node
                    .cairn_header(self.node.replica.kernel().read().await.revision()),
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn release(
        &self,
        request: Request<cairn_pb::ReleaseRequest>,
    ) -> Result<Response<cairn_pb::ReleaseResponse>, Status> {
        let request = request.into_inner();
        let token = (request.fencing_token != 0).then_some(request.fencing_token);
        let (released, revision) = LockRecipe::release(self, &request.key, token).await?;
        Ok(Response::new(cairn_pb::ReleaseResponse {
            header: self.node.cairn_header(revision),
            released,
        }))
    }

    async fn owner(
        &self,
        request: Request<cairn_pb::OwnerRequest>,
    ) -> Result<Response<cairn_pb::OwnerResponse>, Status> {
        let prefix = waiting_line::prefix(&request.into_inner().name);
        self.node.prepare_read(false).await?;
        let kernel = self.node.replica.kernel().read().await;
        let holder = waiting_line::read(&kernel, &prefix)?.into_iter().next();
        let header = self.node.cairn_header(kernel.revision());
        Ok(Response::new(match holder {
            Some(kv) => cairn_pb::OwnerResponse {
                header,
                held: true,
                key: kv.key,
                lease: kv.lease,
                fencing_token: kv.create_revision,
            },
            None => cairn_pb::OwnerResponse {
                header,
                ..Default::default()
            },
        }))
    }
}
