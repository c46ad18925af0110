//! The KV workloads: puts spread over a key space, and reads of one key written before the clock
//! starts.

use anyhow::Context;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use clap::ValueEnum;
use tonic::transport::Channel;

use crate::Args;
use crate::load::{self, Client};

/// A KV workload's request.
#[derive(Clone, Copy, Debug)]
pub enum KvOp {
    Put,
    Range(Consistency),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

fn key(index: u64, size: usize) -> Vec<u8> {
    let mut key = format!("{index:0size$}").into_bytes();
    key.truncate(size.max(1));
    key
}

struct KvLoad {
    kv: KvClient<Channel>,
    op: KvOp,
    key_size: usize,
    key_space: u64,
    value: Vec<u8>,
    /// A cheap deterministic sequence spreads keys without a shared random source.
    state: u64,
}

impl Client for KvLoad {
    async fn send(&mut self) -> anyhow::Result<()> {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        match self.op {
            KvOp::Put => {
                self.kv
                    .put(PutRequest {
                        key: key(self.state % self.key_space, self.key_size),
                        value: self.value.clone(),
                        ..Default::default()
                    })
                    .await
                    .context("put")?;
            }
            KvOp::Range(consistency) => {
                self.kv
                    .range(RangeRequest {
                        key: key(0, self.key_size),
                        serializable: consistency == Consistency::S,
                        ..Default::default()
                    })
                    .await
                    .context("range")?;
            }
        }
        Ok(())
    }
}

pub async fn run(args: &Args, op: KvOp) -> anyhow::Result<()> {
    let channels = load::channels(&args.endpoints, args.conns).await?;
    if let KvOp::Range(_) = op {
        KvClient::new(channels[0].clone())
            .put(PutRequest {
                key: key(0, args.key_size),
                value: vec![b'v'; args.val_size],
                ..Default::default()
            })
            .await
            .context("writing the key to read")?;
    }
    let clients = (0..args.clients)
        .map(|i| KvLoad {
            kv: KvClient::new(channels[i % channels.len()].clone())
                .max_decoding_message_size(usize::MAX),
            op,
            key_size: args.key_size,
            key_space: args.key_space,
            value: vec![b'v'; args.val_size],
            state: (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        })
        .collect();
    let measured = load::run(clients, args.total()).await?;
    let (workload, consistency) = match op {
        KvOp::Put => ("put", "-"),
        KvOp::Range(Consistency::L) => ("range", "l"),
        KvOp::Range(Consistency::S) => ("range", "s"),
    };
    println!(
        "workload={workload} consistency={consistency} clients={} conns={} key_size={} val_size={} {}",
        args.clients,
        args.conns,
        args.key_size,
        args.val_size,
        measured.fields(),
    );
    Ok(())
}
