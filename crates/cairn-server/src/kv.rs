//! etcd's KV service.

use cairn_kernel::{Command, CommandResponse};
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::kv_server::Kv;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::node::{SharedNode, mismatched};
use crate::status::kernel_status;

pub struct KvService {
    node: SharedNode,
}

impl KvService {
    pub fn new(node: SharedNode) -> KvService {
        KvService { node }
    }

    /// Answers with `response`, its header completed with this member's identity.
    fn reply<T: Headed>(&self, mut response: T) -> Result<Response<T>, Status> {
        let header = response.header();
        *header = self.node.complete(header.take());
        Ok(Response::new(response))
    }
}

/// A KV response, whose header the service completes.
trait Headed {
    fn header(&mut self) -> &mut Option<pb::ResponseHeader>;
}

macro_rules! headed {
    ($($response:ty),*) => {
        $(impl Headed for $response {
            fn header(&mut self) -> &mut Option<pb::ResponseHeader> {
                &mut self.header
            }
        })*
    };
}

headed!(
    pb::RangeResponse,
    pb::PutResponse,
    pb::DeleteRangeResponse,
    pb::TxnResponse,
    pb::CompactionResponse
);

/// As in etcd, a read-only txn may be served locally only if every range in it asked to be.
fn is_serializable(txn: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as Op;
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(range)) => range.serializable,
            Some(Op::RequestTxn(txn)) => is_serializable(txn),
            Some(Op::RequestPut(_) | Op::RequestDeleteRange(_)) | None => false,
        })
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let request = request.into_inner();
        let serializable = request.serializable;
        let request = convert::range_request(request)?;
        self.node.prepare_read(serializable).await?;
        let response = self
            .node
            .replica
            .kernel()
            .read()
            .await
            .range(&request)
            .map_err(|e| kernel_status(&e))?;
        self.reply(convert::range_response(response))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        let encoded_len = request.encoded_len();
        let command = Command::Put(convert::put_request(request));
        match self.node.write(encoded_len, command).await? {
            CommandResponse::Put(response) => self.reply(convert::put_response(response)),
            other => mismatched(&other),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        let encoded_len = request.encoded_len();
        let command = Command::DeleteRange(convert::delete_request(request));
        match self.node.write(encoded_len, command).await? {
            CommandResponse::DeleteRange(response) => {
                self.reply(convert::delete_response(response))
            }
            other => mismatched(&other),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let request = request.into_inner();
        let encoded_len = request.encoded_len();
        let serializable = is_serializable(&request);
        let txn = convert::txn_request(request)?;
        let response = if txn.is_read_only() {
            self.node.prepare_read(serializable).await?;
            self.node
                .replica
                .kernel()
                .write()
                .await
                .read_only_txn(&txn)
                .map_err(|e| kernel_status(&e))?
        } else {
            match self.node.write(encoded_len, Command::Txn(txn)).await? {
                CommandResponse::Txn(response) => response,
                other => mismatched(&other),
            }
        };
        self.reply(convert::txn_response(response))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let request = request.into_inner();
        let encoded_len = request.encoded_len();
        let command = Command::Compact(convert::compact_request(request));
        // Compaction is physical as soon as it is applied, so `physical` needs no extra wait.
        match self.node.write(encoded_len, command).await? {
            CommandResponse::Compact(response) => self.reply(convert::compact_response(response)),
            other => mismatched(&other),
        }
    }
}
