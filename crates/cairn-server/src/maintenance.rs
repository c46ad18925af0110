//! etcd's Maintenance service: status, consistency checks and backups.

use std::pin::Pin;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use tokio::io::AsyncReadExt;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::node::{ETCD_API_VERSION, SharedNode};
use crate::status::{kernel_status, replica_status};

/// Bytes per message of a streamed backup.
const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

pub struct MaintenanceService {
    node: SharedNode,
}

impl MaintenanceService {
    pub fn new(node: SharedNode) -> MaintenanceService {
        MaintenanceService { node }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let raft = self.node.replica.status();
        let kernel = self.node.replica.kernel().read().await;
        let db_size = i64::try_from(kernel.size_bytes()).unwrap_or(i64::MAX);
        Ok(Response::new(pb::StatusResponse {
            header: self.node.header(kernel.revision()),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: raft.leader.unwrap_or(0),
            raft_index: raft.last_log_index,
            raft_term: raft.term,
            raft_applied_index: raft.applied_index,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: raft.is_learner,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let kernel = self.node.replica.kernel().read().await;
        let (hash, compact_revision) = kernel
            .hash_kv(request.into_inner().revision)
            .map_err(|e| kernel_status(&e))?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.node.header(kernel.revision()),
            hash,
            compact_revision,
        }))
    }

    /// Hands leadership to another voting member; only the leader takes this request.
    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.node
            .replica
            .move_leader(request.into_inner().target_id)
            .await
            .map_err(|e| replica_status(&e))?;
        let revision = self.node.replica.kernel().read().await.revision();
        Ok(Response::new(pb::MoveLeaderResponse {
            header: self.node.header(revision),
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// Streams a backup of this member's state: a Cairn snapshot, which `cairn snapshot restore`
    /// turns into the data directory of a new cluster.
    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let backup = self
            .node
            .replica
            .backup()
            .await
            .map_err(|e| replica_status(&e))?;
        let file = tokio::fs::File::open(backup.path())
            .await
            .map_err(|e| Status::internal(format!("reading the backup: {e}")))?;
        let header = self
            .node
            .header(self.node.replica.kernel().read().await.revision());
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(stream_backup(backup, file, header, sender));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// Sends the backup in chunks; the backup file is removed when `backup` drops at the end.
async fn stream_backup(
    backup: cairn_raft::Backup,
    mut file: tokio::fs::File,
    header: Option<pb::ResponseHeader>,
    sender: tokio::sync::mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) {
    let mut remaining = backup.len();
    let mut buffer = vec![0u8; SNAPSHOT_CHUNK_BYTES];
    while remaining > 0 {
        let read = match file.read(&mut buffer).await {
            Ok(0) => Err(Status::internal("the backup ended early")),
            Ok(read) => Ok(read),
            Err(e) => Err(Status::internal(format!("reading the backup: {e}"))),
        };
        let message = read.map(|read| {
            remaining -= read as u64;
            pb::SnapshotResponse {
                header,
                remaining_bytes: remaining,
                blob: buffer[..read].to_vec(),
            }
        });
        let failed = message.is_err();
        if sender.send(message).await.is_err() || failed {
            return;
        }
    }
}
