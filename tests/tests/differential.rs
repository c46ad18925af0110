//! One seeded random sequence of KV and lease operations against a real etcd 3.4 and against
//! cairn, every response compared, and watches replaying history from random revisions (with
//! random ranges, filters and prev_kv) compared event for event. Only what legitimately differs between two clusters is normalised: the
//! cluster and member IDs and the Raft term in the outermost header. Revisions, values, counts,
//! `more` flags, error codes and error messages must match exactly.
//!
//! The key space has 12 keys so that any sorted range is at most 12 long, where Go's sort (which
//! etcd uses) is an insertion sort and keeps ties in key order, as Cairn's stable sort does.
//!
//! `CAIRN_DIFF_SEED` and `CAIRN_DIFF_OPS` replay or lengthen a run.

use cairn_proto::etcdserverpb::compare::{CompareTarget, TargetUnion};
use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse, WatchCreateRequest, WatchRequest,
};
use cairn_tests::{start_cairn, start_etcd};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const KEYS: [&str; 12] = [
    "a/0", "a/1", "a/2", "a/3", "b/0", "b/1", "b/2", "b/3", "c", "c/0", "d", "e",
];
const SEED_DEFAULT: u64 = 0xCA12_2024;
const OPS_DEFAULT: usize = 1500;

#[derive(Clone, Debug)]
enum Op {
    Put(PutRequest),
    Range(RangeRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    Grant(LeaseGrantRequest),
    Revoke(LeaseRevokeRequest),
    TimeToLive(LeaseTimeToLiveRequest),
    Leases,
    /// Replays history through a new watch.
    Watch(WatchCreateRequest),
}

/// Leases are granted with explicit IDs from this set, so both servers use the same ones, and
/// with TTLs far longer than the run, so none expires on one server and not the other.
const LEASE_IDS: std::ops::RangeInclusive<i64> = 1..=5;

/// Generates operations, tracking the revision only to aim revision arguments near it.
struct Generator {
    rng: StdRng,
    revision_hint: i64,
}

impl Generator {
    fn key(&mut self) -> Vec<u8> {
        KEYS[self.rng.random_range(0..KEYS.len())]
            .as_bytes()
            .to_vec()
    }

    fn value(&mut self) -> Vec<u8> {
        let len = self.rng.random_range(0..6);
        (0..len)
            .map(|_| self.rng.random_range(b'a'..=b'e'))
            .collect()
    }

    /// (key, range_end) in every shape etcd accepts: one key, a prefix, an interval (sometimes
    /// backwards), from a key, everything.
    fn range(&mut self) -> (Vec<u8>, Vec<u8>) {
        match self.rng.random_range(0..10) {
            0..=3 => (self.key(), Vec::new()),
            4..=5 => {
                let prefix = [b"a/".as_slice(), b"b/", b"c", b"a", b"z"]
                    [self.rng.random_range(0..5)]
                .to_vec();
                let mut end = prefix.clone();
                *end.last_mut().unwrap() += 1;
                (prefix, end)
            }
            6..=7 => (self.key(), self.key()),
            8 => (self.key(), vec![0]),
            _ => (vec![0], vec![0]),
        }
    }

    fn revision(&mut self) -> i64 {
        match self.rng.random_range(0..4) {
            0 => 0,
            _ => self.rng.random_range(-1..=self.revision_hint + 2),
        }
    }

    fn put(&mut self) -> PutRequest {
        let mut put = PutRequest {
            key: self.key(),
            value: self.value(),
            prev_kv: self.rng.random_bool(0.4),
            ..Default::default()
        };
        match self.rng.random_range(0..20) {
            0 => {
                put.ignore_value = true;
                put.value.clear();
            }
            1 => put.ignore_value = true,
            2 => put.ignore_lease = true,
            3 | 5 => put.lease = self.rng.random_range(LEASE_IDS),
            4 => put.key.clear(),
            _ => {}
        }
        put
    }

    fn range_request(&mut self) -> RangeRequest {
        let (key, range_end) = self.range();
        let mut range = RangeRequest {
            key,
            range_end,
            serializable: self.rng.random_bool(0.5),
            ..Default::default()
        };
        if self.rng.random_bool(0.3) {
            range.limit = self.rng.random_range(0..4);
        }
        if self.rng.random_bool(0.3) {
            range.revision = self.revision();
        }
        if self.rng.random_bool(0.3) {
            range.sort_order = self.rng.random_range(0..3);
            range.sort_target = self.rng.random_range(0..5);
        }
        range.keys_only = self.rng.random_bool(0.1);
        range.count_only = self.rng.random_bool(0.1);
        if self.rng.random_bool(0.15) {
            range.min_mod_revision = self.rng.random_range(0..=self.revision_hint);
            range.max_mod_revision = self.rng.random_range(0..=self.revision_hint + 1);
        }
        if self.rng.random_bool(0.15) {
            range.min_create_revision = self.rng.random_range(0..=self.revision_hint);
            range.max_create_revision = self.rng.random_range(0..=self.revision_hint + 1);
        }
        if self.rng.random_ratio(1, 40) {
            range.key.clear();
        }
        range
    }

    /// Inside a txn no delete runs to the end of the key space: etcd 3.4 misjudges such a delete
    /// in its duplicate-key check (and can crash applying the txn); Cairn refuses those txns, a
    /// deliberate difference covered by the kernel's validation tests.
    fn delete(&mut self, in_txn: bool) -> DeleteRangeRequest {
        let (key, mut range_end) = self.range();
        if in_txn && range_end == [0] {
            range_end.clear();
        }
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.rng.random_bool(0.5),
        }
    }

    fn compare(&mut self) -> Compare {
        let target = self.rng.random_range(0..5);
        let operand = match CompareTarget::try_from(target).unwrap() {
            CompareTarget::Version => TargetUnion::Version(self.rng.random_range(0..4)),
            CompareTarget::Create => {
                TargetUnion::CreateRevision(self.rng.random_range(0..=self.revision_hint))
            }
            CompareTarget::Mod => {
                TargetUnion::ModRevision(self.rng.random_range(0..=self.revision_hint))
            }
            CompareTarget::Value => TargetUnion::Value(self.value()),
            CompareTarget::Lease => TargetUnion::Lease(self.rng.random_range(0..2)),
        };
        let (key, range_end) = if self.rng.random_bool(0.8) {
            (self.key(), Vec::new())
        } else {
            self.range()
        };
        Compare {
            result: self.rng.random_range(0..4),
            target,
            key,
            range_end,
            target_union: Some(operand),
        }
    }

    fn request_op(&mut self, depth: u32) -> RequestOp {
        let request = match self.rng.random_range(0..10) {
            0..=3 => Request::RequestPut(self.put()),
            4..=6 => Request::RequestRange(self.range_request()),
            7..=8 => Request::RequestDeleteRange(self.delete(true)),
            _ if depth < 2 => Request::RequestTxn(self.txn(depth + 1)),
            _ => Request::RequestRange(self.range_request()),
        };
        RequestOp {
            request: Some(request),
        }
    }

    fn txn(&mut self, depth: u32) -> TxnRequest {
        let compares = self.rng.random_range(0..3);
        let successes = self.rng.random_range(0..4);
        let failures = self.rng.random_range(0..3);
        TxnRequest {
            compare: (0..compares).map(|_| self.compare()).collect(),
            success: (0..successes).map(|_| self.request_op(depth)).collect(),
            failure: (0..failures).map(|_| self.request_op(depth)).collect(),
        }
    }

    fn lease(&mut self) -> Op {
        let id = self.rng.random_range(LEASE_IDS);
        match self.rng.random_range(0..10) {
            0..=3 => Op::Grant(LeaseGrantRequest {
                id,
                ttl: [100, 1000, 9_000_000_001][self.rng.random_range(0..3)],
            }),
            4..=5 => Op::Revoke(LeaseRevokeRequest { id }),
            6..=8 => Op::TimeToLive(LeaseTimeToLiveRequest {
                id,
                keys: self.rng.random_bool(0.5),
            }),
            _ => Op::Leases,
        }
    }

    fn watch(&mut self) -> Op {
        use cairn_proto::etcdserverpb::watch_create_request::FilterType;
        // Half of them watch every key, so replays carry many events.
        let (key, range_end) = if self.rng.random_bool(0.5) {
            (vec![0], vec![0])
        } else {
            self.range()
        };
        let filters = match self.rng.random_range(0..4) {
            0 => vec![FilterType::Noput as i32],
            1 => vec![FilterType::Nodelete as i32],
            _ => Vec::new(),
        };
        Op::Watch(WatchCreateRequest {
            key,
            range_end,
            // Mostly recent history, which compaction has not reached yet; sometimes the future.
            start_revision: self
                .rng
                .random_range((self.revision_hint - 40).max(1)..=self.revision_hint + 1),
            filters,
            prev_kv: self.rng.random_bool(0.5),
            ..Default::default()
        })
    }

    fn op(&mut self) -> Op {
        match self.rng.random_range(0..110) {
            100..=107 => self.lease(),
            108..=109 => self.watch(),
            0..=34 => Op::Put(self.put()),
            35..=59 => Op::Range(self.range_request()),
            60..=71 => Op::Delete(self.delete(false)),
            72..=96 => Op::Txn(self.txn(0)),
            _ => Op::Compact(CompactionRequest {
                revision: self
                    .rng
                    .random_range((self.revision_hint - 8).max(0)..=self.revision_hint + 1),
                physical: self.rng.random_bool(0.5),
            }),
        }
    }
}

/// A response whose outermost header names the cluster that sent it.
trait Answer: std::fmt::Debug {
    fn header(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! answers {
    ($($response:ty),*) => {
        $(impl Answer for $response {
            fn header(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        })*
    };
}

answers!(
    PutResponse,
    RangeResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse,
    LeaseTimeToLiveResponse,
    LeaseLeasesResponse
);

/// What a server answered, with the fields that name the cluster cleared.
fn show<T: Answer>(result: Result<tonic::Response<T>, tonic::Status>) -> String {
    match result {
        Ok(response) => {
            let mut response = response.into_inner();
            if let Some(header) = response.header() {
                header.cluster_id = 0;
                header.member_id = 0;
                header.raft_term = 0;
            }
            format!("{response:?}")
        }
        Err(status) => format!("error {:?}: {}", status.code(), status.message()),
    }
}

struct Clients {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
}

impl Clients {
    async fn connect(endpoint: &str) -> Clients {
        let channel = Channel::from_shared(endpoint.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap();
        Clients {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            watch: WatchClient::new(channel),
        }
    }
}

async fn execute(clients: &mut Clients, op: Op) -> String {
    let client = &mut clients.kv;
    match op {
        Op::Put(r) => show(client.put(r).await),
        Op::Range(r) => show(client.range(r).await),
        Op::Delete(r) => show(client.delete_range(r).await),
        Op::Txn(r) => show(client.txn(r).await),
        Op::Compact(r) => show(client.compact(r).await),
        Op::Grant(r) => show(clients.lease.lease_grant(r).await),
        Op::Revoke(r) => show(clients.lease.lease_revoke(r).await),
        Op::TimeToLive(r) => show(
            clients
                .lease
                .lease_time_to_live(r)
                .await
                .map(|mut response| {
                    let answer = response.get_mut();
                    // Seconds left depend on when each server was asked; the keys' order on Go's map.
                    answer.ttl = answer.ttl.min(0);
                    answer.keys.sort();
                    response
                }),
        ),
        Op::Leases => show(clients.lease.lease_leases(LeaseLeasesRequest {}).await.map(
            |mut response| {
                response.get_mut().leases.sort_by_key(|lease| lease.id);
                response
            },
        )),
        Op::Watch(create) => replay(&mut clients.watch, create).await,
    }
}

/// What a watch from the past delivers: whether it was created, every event in order (however
/// the server grouped them into responses), and how it was cancelled, if it was. The watch is
/// read until it stays quiet for a moment, by which time history has been replayed.
async fn replay(client: &mut WatchClient<Channel>, create: WatchCreateRequest) -> String {
    let request = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    };
    let (requests, requests_rx) = tokio::sync::mpsc::unbounded_channel();
    requests.send(request).unwrap();
    let mut stream = client
        .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(
            requests_rx,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Ok(Ok(Some(response))) =
        tokio::time::timeout(Duration::from_millis(300), stream.message()).await
    {
        if response.created {
            seen.push("created".to_string());
        }
        for event in response.events {
            seen.push(format!("{event:?}"));
        }
        if response.canceled {
            seen.push(format!(
                "watch {} canceled at {} ({})",
                response.watch_id, response.compact_revision, response.cancel_reason
            ));
            break;
        }
    }
    seen.join("\n")
}

fn revision_of(response: &str) -> Option<i64> {
    let start = response.find("revision: ")? + "revision: ".len();
    let digits: String = response[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn random_operations_match_etcd() {
    let seed = std::env::var("CAIRN_DIFF_SEED").map_or(SEED_DEFAULT, |s| {
        s.parse().expect("CAIRN_DIFF_SEED is a u64")
    });
    let ops = std::env::var("CAIRN_DIFF_OPS").map_or(OPS_DEFAULT, |s| {
        s.parse().expect("CAIRN_DIFF_OPS is a count")
    });
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path())
        .await
        .expect("the reference etcd must start");
    let cairn = start_cairn(&dir.path().join("cairn-data")).await.unwrap();
    let mut etcd_client = Clients::connect(&etcd.endpoint).await;
    let mut cairn_client = Clients::connect(&cairn.endpoint).await;

    let mut generator = Generator {
        rng: StdRng::seed_from_u64(seed),
        revision_hint: 1,
    };
    let mut differences = Vec::new();
    let mut errors = 0;
    let mut watch_events = 0;
    for step in 0..ops {
        let op = generator.op();
        let expected = execute(&mut etcd_client, op.clone()).await;
        let actual = execute(&mut cairn_client, op.clone()).await;
        if expected.starts_with("error") {
            errors += 1;
        }
        if matches!(op, Op::Watch(_)) {
            watch_events += expected.matches("Event {").count();
        }
        if let Some(revision) = revision_of(&expected) {
            generator.revision_hint = generator.revision_hint.max(revision);
        }
        if expected != actual {
            differences.push(format!(
                "step {step}: {op:?}\n  etcd:  {expected}\n  cairn: {actual}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "seed {seed}: {} of {ops} responses differ; first ones:\n{}",
        differences.len(),
        differences
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        watch_events >= 20,
        "watches replayed only {watch_events} events"
    );
    // The sequence must have exercised both paths, not only errors or only successes.
    assert!(
        errors > ops / 50 && errors < ops / 2,
        "{errors} errors in {ops} operations"
    );
    assert!(
        generator.revision_hint > (ops / 5) as i64,
        "only reached revision {}",
        generator.revision_hint
    );
}
