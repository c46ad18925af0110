//! Hostile plugins on a three-member cluster of real processes: NaNs and float maths, runaway
//! memory, an infinite loop, deep recursion, a trap after writes, an oversized result and a WASI
//! import. Each computes the same bits on every replica or fails on every replica with the same
//! clear error, writes nothing, and leaves the cluster serving.

use cairn_proto::cairn_v1 as pb;
use cairn_proto::etcdserverpb::RangeRequest;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_tests::cluster::Cluster;
use cairn_tests::etcdctl::Etcdctl;
use cairn_tests::plugins::{call, client, deploy, manifest};
use tonic::Code;

/// The prefix every hostile plugin is granted and writes under before it misbehaves.
const PREFIX: &str = "hostile/";
/// The first key after every key under [`PREFIX`].
const PREFIX_END: &[u8] = b"hostile0";

/// A plugin function that must fail: the limits it runs under and how every replica must refuse
/// it.
struct Hostile {
    package: &'static str,
    function: &'static str,
    limits: Option<pb::PluginLimits>,
    code: Code,
    /// A stable part of the error message.
    message: &'static str,
}

fn hostiles() -> Vec<Hostile> {
    vec![
        Hostile {
            package: "hostile-memory",
            function: "grow",
            limits: None,
            code: Code::ResourceExhausted,
            message: "memory limit",
        },
        Hostile {
            package: "hostile-loop",
            function: "spin",
            limits: None,
            code: Code::ResourceExhausted,
            message: "fuel",
        },
        Hostile {
            package: "hostile-loop",
            function: "spin_on_host",
            limits: None,
            code: Code::ResourceExhausted,
            message: "fuel",
        },
        Hostile {
            package: "hostile-recursion",
            function: "deep",
            limits: None,
            code: Code::Aborted,
            message: "call stack exhausted",
        },
        Hostile {
            package: "hostile-trap",
            function: "trap_after_writes",
            limits: None,
            code: Code::Aborted,
            message: "unreachable",
        },
        // Memory enough to build the 16 MiB result, so that the output limit is what stops it.
        Hostile {
            package: "hostile-output",
            function: "huge",
            limits: Some(pb::PluginLimits {
                fuel: 0,
                memory_bytes: 64 << 20,
                output_bytes: 1 << 20,
            }),
            code: Code::ResourceExhausted,
            message: "output limit",
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_plugins_fail_identically_everywhere_and_the_cluster_stays_healthy() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    a_wasi_import_is_refused_at_deploy(&cluster).await;
    float_maths_gives_the_same_bits_everywhere(&cluster).await;
    for (turn, hostile) in hostiles().iter().enumerate() {
        fails_identically_and_writes_nothing(&cluster, hostile, turn % cluster.size()).await;
    }
    the_cluster_still_serves(&cluster).await;
}

async fn a_wasi_import_is_refused_at_deploy(cluster: &Cluster) {
    let mut admin = client(cluster.endpoint(0)).await.unwrap();
    let refused = deploy(
        &mut admin,
        "hostile-wasi",
        "hostile-wasi",
        manifest(&[PREFIX]),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("wasi:random/random@0.2.0"),
        "{refused:?}"
    );
    for i in 0..cluster.size() {
        let mut member = client(cluster.endpoint(i)).await.unwrap();
        let listed = member.list(pb::ListRequest {}).await.unwrap().into_inner();
        assert!(
            listed.plugins.iter().all(|p| p.name != "hostile-wasi"),
            "member {i} lists {:?}",
            listed.plugins
        );
    }
}

/// `nan` through the log twice and read-only on each member: the same bits every time, and the
/// bits [`expected_float_slots`] prescribes.
async fn float_maths_gives_the_same_bits_everywhere(cluster: &Cluster) {
    let mut admin = client(cluster.endpoint(0)).await.unwrap();
    deploy(
        &mut admin,
        "hostile-float",
        "hostile-float",
        manifest(&[PREFIX]),
    )
    .await
    .unwrap();
    let logged = call(&mut admin, "hostile-float", "nan", b"")
        .await
        .unwrap()
        .output;
    check_float_bits(&logged);
    let again = call(&mut admin, "hostile-float", "nan", b"")
        .await
        .unwrap()
        .output;
    assert_eq!(again, logged, "a second call through the log");
    for i in 0..cluster.size() {
        let local = read_only(cluster, i, "hostile-float", "nan")
            .await
            .unwrap()
            .output;
        assert_eq!(local, logged, "member {i}'s read-only call");
    }
}

const NAN64: u64 = 0x7ff8_0000_0000_0000;
const NAN32: u32 = 0x7fc0_0000;
/// hostile-float's quiet NaN with a payload, and with its sign bit set.
const PAYLOAD64: u64 = 0x7ff8_0000_0000_dead;
const NEGATIVE_PAYLOAD64: u64 = 0xfff8_0000_0000_dead;
const ONE64: u64 = 0x3ff0_0000_0000_0000;
const ONE32: u32 = 0x3f80_0000;

/// One value of `nan`'s output, in the layout of tests/plugins/hostile-float.
enum Slot {
    F64(u64),
    F32(u32),
    Bytes(Vec<u8>),
    /// Some NaN. `min` of two NaNs may pass on either: the compiler's choice, fixed in the
    /// component but by no standard.
    AnyNan64,
    AnyNan32,
}

/// What `nan` must return on any hardware. Equal outputs across members would hold on a cluster
/// of like machines even without the engine's help; these bits are the evidence that it makes
/// them portable: arithmetic that yields a NaN yields the canonical one, whatever payload x86 or
/// ARM would carry through; sign operations keep the payload, as WebAssembly defines them to;
/// ordinary maths gives IEEE 754's bits, computed here natively in the same order.
fn expected_float_slots() -> Vec<Slot> {
    use Slot::*;
    let mut slots = vec![
        // 0/0, sqrt(-1), inf-inf, inf*0, payload+1, signalling*1, payload+signalling.
        F64(NAN64),
        F64(NAN64),
        F64(NAN64),
        F64(NAN64),
        F64(NAN64),
        F64(NAN64),
        F64(NAN64),
        // -payload, then min and max against 1, then min of two NaNs.
        F64(NEGATIVE_PAYLOAD64),
        F64(ONE64),
        F64(ONE64),
        AnyNan64,
        // abs, copysign(-1), then floor, trunc and sqrt, which are arithmetic.
        F64(PAYLOAD64),
        F64(NEGATIVE_PAYLOAD64),
        F64(NAN64),
        F64(NAN64),
        F64(NAN64),
    ];
    slots.extend((0..7).map(|_| F32(NAN32)));
    slots.extend([F32(ONE32), F32(ONE32), AnyNan32, F32(NAN32)]);
    // Promotion and demotion canonicalize too.
    slots.extend([F64(NAN64), F32(NAN32), F32(NAN32), F64(NAN64)]);
    slots.extend(ordinary_maths());
    slots
}

/// hostile-float's ordinary maths, natively: Rust neither fuses nor reorders float operations,
/// so these are the bits IEEE 754 prescribes.
fn ordinary_maths() -> Vec<Slot> {
    use Slot::*;
    let x = 0.7f64;
    let (mut term, mut sine) = (x, 0.0f64);
    for n in 0..12 {
        sine += term;
        let k = (2 * n + 2) as f64;
        term = -term * x * x / (k * (k + 1.0));
    }
    let (mut term, mut exp, mut harmonic) = (1.0f64, 0.0f64, 0.0f64);
    for n in 1..40 {
        exp += term;
        term *= x / n as f64;
        harmonic += 1.0 / n as f64;
    }
    let product = (0..100).fold(1.0f32, |product, _| product * 1.1);
    vec![
        F64(sine.to_bits()),
        F64(exp.to_bits()),
        F64(harmonic.to_bits()),
        F32(product.to_bits()),
        F32(2.0f32.sqrt().to_bits()),
        F64(2.0f64.sqrt().to_bits()),
        F64((1e308f64 * 10.0).to_bits()),
        F64((5e-324f64 / 2.0).to_bits()),
        F32((0.1f64 as f32).to_bits()),
        // Float-to-integer conversions saturate: NaN to 0, too large to the maximum.
        Bytes(0i64.to_le_bytes().to_vec()),
        Bytes(i32::MAX.to_le_bytes().to_vec()),
    ]
}

/// Walks `output` slot by slot, so that a failure names the first value that differs.
fn check_float_bits(output: &[u8]) {
    let mut rest = output;
    for (i, slot) in expected_float_slots().into_iter().enumerate() {
        let width = match &slot {
            Slot::F64(_) | Slot::AnyNan64 => 8,
            Slot::F32(_) | Slot::AnyNan32 => 4,
            Slot::Bytes(bytes) => bytes.len(),
        };
        assert!(
            rest.len() >= width,
            "output ends at slot {i}: {output:02x?}"
        );
        let (value, tail) = rest.split_at(width);
        rest = tail;
        let bits64 = || u64::from_le_bytes(value.try_into().unwrap());
        let bits32 = || u32::from_le_bytes(value.try_into().unwrap());
        match slot {
            Slot::F64(want) => assert_eq!(bits64(), want, "slot {i}: {:#x}", bits64()),
            Slot::F32(want) => assert_eq!(bits32(), want, "slot {i}: {:#x}", bits32()),
            Slot::Bytes(want) => assert_eq!(value, want, "slot {i}"),
            Slot::AnyNan64 => assert!(f64::from_bits(bits64()).is_nan(), "slot {i}"),
            Slot::AnyNan32 => assert!(f32::from_bits(bits32()).is_nan(), "slot {i}"),
        }
    }
    assert!(rest.is_empty(), "{} bytes past the last slot", rest.len());
}

/// Calls `hostile` through member `via`, then checks that every replica applied the call and
/// still agrees on a revision and hash that the call did not move, that nothing is under
/// [`PREFIX`], and that a read-only call fails the same way on every member.
async fn fails_identically_and_writes_nothing(cluster: &Cluster, hostile: &Hostile, via: usize) {
    let mut admin = client(cluster.endpoint(via)).await.unwrap();
    let manifest = pb::Manifest {
        limits: hostile.limits,
        ..manifest(&[PREFIX])
    };
    deploy(&mut admin, hostile.package, hostile.package, manifest)
        .await
        .unwrap();
    let before = cluster.converged().await.unwrap();

    let failed = call(&mut admin, hostile.package, hostile.function, b"")
        .await
        .unwrap_err();
    assert_eq!(failed.code(), hostile.code, "{failed:?}");
    assert!(failed.message().contains(hostile.message), "{failed:?}");

    cluster.all_applied().await.unwrap();
    assert_eq!(
        cluster.converged().await.unwrap(),
        before,
        "{} moved the revision or the hash",
        hostile.package
    );
    for i in 0..cluster.size() {
        assert_eq!(keys_under_prefix(cluster, i).await, 0, "member {i}");
    }

    let mut local = Vec::new();
    for i in 0..cluster.size() {
        let status = read_only(cluster, i, hostile.package, hostile.function)
            .await
            .unwrap_err();
        local.push((status.code(), status.message().to_string()));
    }
    assert!(local.iter().all(|l| l == &local[0]), "{local:?}");
    let (code, message) = &local[0];
    assert_eq!((*code, message.as_str()), (failed.code(), failed.message()));
}

/// Calls `function` read-only on member `i` alone, without a read barrier.
async fn read_only(
    cluster: &Cluster,
    i: usize,
    plugin: &str,
    function: &str,
) -> Result<pb::CallResponse, tonic::Status> {
    let mut member = client(cluster.endpoint(i)).await.unwrap();
    member
        .call(pb::CallRequest {
            plugin: plugin.into(),
            function: function.into(),
            read_only: true,
            serializable: true,
            ..pb::CallRequest::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// How many keys member `i` holds under [`PREFIX`], read from its own store.
async fn keys_under_prefix(cluster: &Cluster, i: usize) -> i64 {
    let mut kv = KvClient::connect(cluster.endpoint(i).to_string())
        .await
        .unwrap();
    kv.range(RangeRequest {
        key: PREFIX.into(),
        range_end: PREFIX_END.to_vec(),
        serializable: true,
        count_only: true,
        ..RangeRequest::default()
    })
    .await
    .unwrap()
    .into_inner()
    .count
}

/// After all that, plain KV through every member and a well-behaved plugin still work.
async fn the_cluster_still_serves(cluster: &Cluster) {
    for i in 0..cluster.size() {
        let ctl = Etcdctl::new(cluster.endpoint(i));
        let key = format!("healthy/{i}");
        assert_eq!(ctl.ok(&["put", &key, "yes"]), "OK\n");
        assert_eq!(ctl.ok(&["get", &key]), format!("{key}\nyes\n"));
    }
    let mut admin = client(cluster.endpoint(1)).await.unwrap();
    deploy(&mut admin, "counter", "counter", manifest(&["counters/"]))
        .await
        .unwrap();
    let counted = call(&mut admin, "counter", "incr", b"counters/x")
        .await
        .unwrap();
    assert_eq!(counted.output, b"1");
    cluster.converged().await.unwrap();
}
