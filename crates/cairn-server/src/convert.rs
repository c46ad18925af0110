//! Conversion between etcd's wire messages and the kernel's plain types: the only place where
//! both are known. Malformed wire input (an op with no request, an unknown enum value) is refused
//! here, with etcd's error where etcd has one.

use cairn_kernel as kernel;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;
use tonic::Status;

use crate::status::{invalid_argument, kv_status};

pub fn range_request(r: pb::RangeRequest) -> Result<kernel::RangeRequest, Status> {
    let sort_order = match pb::range_request::SortOrder::try_from(r.sort_order) {
        Ok(pb::range_request::SortOrder::None) => kernel::SortOrder::None,
        Ok(pb::range_request::SortOrder::Ascend) => kernel::SortOrder::Ascend,
        Ok(pb::range_request::SortOrder::Descend) => kernel::SortOrder::Descend,
        Err(_) => return Err(invalid_argument("etcdserver: invalid sort option")),
    };
    let sort_target = match pb::range_request::SortTarget::try_from(r.sort_target) {
        Ok(pb::range_request::SortTarget::Key) => kernel::SortTarget::Key,
        Ok(pb::range_request::SortTarget::Version) => kernel::SortTarget::Version,
        Ok(pb::range_request::SortTarget::Create) => kernel::SortTarget::Create,
        Ok(pb::range_request::SortTarget::Mod) => kernel::SortTarget::Mod,
        Ok(pb::range_request::SortTarget::Value) => kernel::SortTarget::Value,
        Err(_) => return Err(invalid_argument("etcdserver: invalid sort option")),
    };
    Ok(kernel::RangeRequest {
        range: kernel::KeyRange::from_etcd(r.key, r.range_end),
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn put_request(r: pb::PutRequest) -> kernel::PutRequest {
    kernel::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn delete_request(r: pb::DeleteRangeRequest) -> kernel::DeleteRangeRequest {
    kernel::DeleteRangeRequest {
        range: kernel::KeyRange::from_etcd(r.key, r.range_end),
        prev_kv: r.prev_kv,
    }
}

pub fn txn_request(r: pb::TxnRequest) -> Result<kernel::TxnRequest, Status> {
    Ok(kernel::TxnRequest {
        compare: r
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: r
            .success
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
        failure: r
            .failure
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
    })
}

fn request_op(op: pb::RequestOp) -> Result<kernel::RequestOp, Status> {
    use pb::request_op::Request;
    match op.request {
        Some(Request::RequestRange(r)) => range_request(r).map(kernel::RequestOp::Range),
        Some(Request::RequestPut(r)) => Ok(kernel::RequestOp::Put(put_request(r))),
        Some(Request::RequestDeleteRange(r)) => {
            Ok(kernel::RequestOp::DeleteRange(delete_request(r)))
        }
        Some(Request::RequestTxn(r)) => txn_request(r).map(kernel::RequestOp::Txn),
        // etcd's answer to an empty op.
        None => Err(kv_status(&kernel::KvError::KeyNotFound)),
    }
}

/// etcd takes the operand from the union member that matches the target and treats a missing or
/// mismatched one as zero (or an empty value); so does Cairn.
fn compare(c: pb::Compare) -> Result<kernel::Compare, Status> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let result = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => kernel::CompareResult::Equal,
        Ok(CompareResult::Greater) => kernel::CompareResult::Greater,
        Ok(CompareResult::Less) => kernel::CompareResult::Less,
        Ok(CompareResult::NotEqual) => kernel::CompareResult::NotEqual,
        Err(_) => {
            return Err(invalid_argument(format!(
                "invalid compare result {}",
                c.result
            )));
        }
    };
    let target = match (CompareTarget::try_from(c.target), c.target_union) {
        (Ok(CompareTarget::Version), Some(TargetUnion::Version(v))) => {
            kernel::CompareTarget::Version(v)
        }
        (Ok(CompareTarget::Version), _) => kernel::CompareTarget::Version(0),
        (Ok(CompareTarget::Create), Some(TargetUnion::CreateRevision(r))) => {
            kernel::CompareTarget::Create(r)
        }
        (Ok(CompareTarget::Create), _) => kernel::CompareTarget::Create(0),
        (Ok(CompareTarget::Mod), Some(TargetUnion::ModRevision(r))) => {
            kernel::CompareTarget::Mod(r)
        }
        (Ok(CompareTarget::Mod), _) => kernel::CompareTarget::Mod(0),
        (Ok(CompareTarget::Value), Some(TargetUnion::Value(v))) => kernel::CompareTarget::Value(v),
        (Ok(CompareTarget::Value), _) => kernel::CompareTarget::Value(Vec::new()),
        (Ok(CompareTarget::Lease), Some(TargetUnion::Lease(l))) => kernel::CompareTarget::Lease(l),
        (Ok(CompareTarget::Lease), _) => kernel::CompareTarget::Lease(0),
        (Err(_), _) => {
            return Err(invalid_argument(format!(
                "invalid compare target {}",
                c.target
            )));
        }
    };
    Ok(kernel::Compare {
        range: kernel::KeyRange::from_etcd(c.key, c.range_end),
        target,
        result,
    })
}

pub fn compact_request(r: pb::CompactionRequest) -> kernel::CompactRequest {
    kernel::CompactRequest {
        revision: r.revision,
    }
}

/// A header carrying only a revision, as etcd puts on responses nested in a txn; the service
/// fills in the rest for the outermost response.
fn revision_header(revision: kernel::Revision) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    })
}

pub fn key_value(kv: kernel::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// A watch event; `prev_kv` says whether the watcher asked for the previous state.
pub fn event(e: &kernel::Event, prev_kv: bool) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            kernel::EventKind::Put => mvccpb::event::EventType::Put,
            kernel::EventKind::Delete => mvccpb::event::EventType::Delete,
        } as i32,
        kv: Some(key_value(e.kv.clone())),
        prev_kv: if prev_kv {
            e.prev_kv.clone().map(key_value)
        } else {
            None
        },
    }
}

pub fn range_response(r: kernel::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: revision_header(r.revision),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_response(r: kernel::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: revision_header(r.revision),
        prev_kv: r.prev_kv.map(key_value),
    }
}

pub fn delete_response(r: kernel::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: revision_header(r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

pub fn txn_response(r: kernel::TxnResponse) -> pb::TxnResponse {
    use pb::response_op::Response;
    let responses = r
        .responses
        .into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                kernel::ResponseOp::Range(r) => Response::ResponseRange(range_response(r)),
                kernel::ResponseOp::Put(r) => Response::ResponsePut(put_response(r)),
                kernel::ResponseOp::DeleteRange(r) => {
                    Response::ResponseDeleteRange(delete_response(r))
                }
                kernel::ResponseOp::Txn(r) => Response::ResponseTxn(txn_response(r)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: revision_header(r.revision),
        succeeded: r.succeeded,
        responses,
    }
}

pub fn compact_response(r: kernel::CompactResponse) -> pb::CompactionResponse {
    pb::CompactionResponse {
        header: revision_header(r.revision),
    }
}
