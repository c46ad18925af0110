//! Plain request and response types of the key-value API.
//!
//! They mirror etcd v3's semantics without its wire encoding: the node converts between these and
//! the protobuf messages at its edge, so the kernel never depends on gRPC. Where the wire format
//! leaves room for nonsense (an op with no request, a compare whose operand does not match its
//! target), these types do not: the edge rejects or resolves it before the kernel sees it.

use serde::{Deserialize, Serialize};

pub use crate::plugin::{
    PluginBindRequest, PluginCallRequest, PluginCallResponse, PluginDeployRequest,
    PluginDeployResponse, PluginRecordResponse, PluginRemoveRequest,
};

/// A main revision of the store: it grows by one with every write that changes something.
pub type Revision = i64;

/// Lease identifier; [`NO_LEASE`] means the key is not attached to a lease.
pub type LeaseId = i64;

/// The lease id that means "no lease".
pub const NO_LEASE: LeaseId = 0;

/// The revision of an empty store, as in etcd: the first write is revision 2.
pub const INITIAL_REVISION: Revision = 1;

/// A key's state at some revision, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: LeaseId,
}

/// Which keys a request touches: one key, or the half-open interval `[start, end)`, or every key
/// from `start` on. Built from etcd's `(key, range_end)` pair by [`KeyRange::from_etcd`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRange {
    Key(Vec<u8>),
    Interval { start: Vec<u8>, end: Vec<u8> },
    From(Vec<u8>),
}

impl KeyRange {
    /// Interprets etcd's encoding: an empty `range_end` names one key and `"\0"` means "no upper
    /// bound".
    pub fn from_etcd(key: Vec<u8>, range_end: Vec<u8>) -> KeyRange {
        match range_end.as_slice() {
            [] => KeyRange::Key(key),
            [0] => KeyRange::From(key),
            _ => KeyRange::Interval {
                start: key,
                end: range_end,
            },
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(only) => only.as_slice() == key,
            KeyRange::Interval { start, end } => start.as_slice() <= key && key < end.as_slice(),
            KeyRange::From(start) => start.as_slice() <= key,
        }
    }

    /// The first key of the range; etcd requires it to be non-empty.
    pub fn start(&self) -> &[u8] {
        match self {
            KeyRange::Key(key) => key,
            KeyRange::Interval { start, .. } | KeyRange::From(start) => start,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub range: KeyRange,
    /// At most this many keys; 0 means no limit.
    pub limit: i64,
    /// Point in time to read at; `<= 0` means the newest revision.
    pub revision: Revision,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: Revision,
    pub max_mod_revision: Revision,
    pub min_create_revision: Revision,
    pub max_create_revision: Revision,
}

impl RangeRequest {
    /// A plain read of `range` at the newest revision.
    pub fn new(range: KeyRange) -> RangeRequest {
        RangeRequest {
            range,
            limit: 0,
            revision: 0,
            sort_order: SortOrder::None,
            sort_target: SortTarget::Key,
            keys_only: false,
            count_only: false,
            min_mod_revision: 0,
            max_mod_revision: 0,
            min_create_revision: 0,
            max_create_revision: 0,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    /// Store revision for the response header.
    pub revision: Revision,
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    /// Number of keys in the range, before limit and revision filters.
    pub count: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: LeaseId,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

impl PutRequest {
    /// A plain put with no lease and no options.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: value.into(),
            lease: NO_LEASE,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub revision: Revision,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    pub range: KeyRange,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub revision: Revision,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// The field a compare inspects, carrying the operand it is compared with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(Revision),
    Mod(Revision),
    Value(Vec<u8>),
    Lease(LeaseId),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub range: KeyRange,
    pub target: CompareTarget,
    pub result: CompareResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

impl TxnRequest {
    /// Whether no branch, at any depth, writes: such a txn needs no revision and no log entry.
    pub fn is_read_only(&self) -> bool {
        self.success.iter().chain(&self.failure).all(|op| match op {
            RequestOp::Range(_) => true,
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
            RequestOp::Txn(txn) => txn.is_read_only(),
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    /// Header revision. As in etcd, only the outermost txn sets it; nested ones report 0.
    pub revision: Revision,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactRequest {
    pub revision: Revision,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactResponse {
    pub revision: Revision,
}

/// The longest TTL a lease may have, in seconds: etcd's `MaxLeaseTTL`.
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

/// Grants lease `id` for `ttl` seconds. The member that receives the client's request picks the
/// id (when the client leaves it to the server) and applies the minimum TTL, so the command is
/// final and every replica grants the same lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantRequest {
    pub id: LeaseId,
    pub ttl: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantResponse {
    pub revision: Revision,
    pub id: LeaseId,
    pub ttl: i64,
}

/// Revokes a lease: every key attached to it is deleted, all at one revision. Clients send it,
/// and so does the leader when a lease expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevokeRequest {
    pub id: LeaseId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevokeResponse {
    pub revision: Revision,
}

/// A granted lease as the replicated state knows it. How long it has left is not replicated
/// state: the leader keeps each lease's deadline in memory and revokes it through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    /// The TTL it was granted with, in seconds.
    pub ttl: i64,
    /// The keys attached to it, in key order.
    pub keys: Vec<Vec<u8>>,
}

/// A state change, applied in log order on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    PluginDeploy(PluginDeployRequest),
    PluginRemove(PluginRemoveRequest),
    PluginBind(PluginBindRequest),
    PluginCall(PluginCallRequest),
}

/// The result of applying a [`Command`], of the matching kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    PluginDeploy(PluginDeployResponse),
    PluginRemove(PluginRecordResponse),
    PluginBind(PluginRecordResponse),
    PluginCall(PluginCallResponse),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key, as watchers see it (etcd's `mvccpb.Event`). For a delete, `kv` holds
/// only the key and the revision of the delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The key's state before the change, if it existed and is still in history.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}
