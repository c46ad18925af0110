//! A small system of services on Cairn's bundled recipes; see README.md for the walkthrough.
//!
//! - `setup`: stores the JSON Schema of the config, binds the schema validator to `config/`,
//!   writes a valid config and shows an invalid one refused.
//! - `scheduler NAME`: campaigns in the election `scheduler`; whichever scheduler leads pushes
//!   a job onto the queue `jobs` every second, the others wait to take over.
//! - `worker NAME`: registers itself as an instance of the service `worker`, and claims, runs
//!   and acks jobs; kill one mid-job and its job goes to another worker once its visibility
//!   timeout passes.
//! - `gateway`: lists the workers, then prints every change as they come and go.

use std::time::Duration;

use anyhow::{Context, bail};
use cairn_client::Client;
use cairn_client::discovery::{Change, Filter, Instance};
use cairn_client::queue::PushOptions;
use cairn_proto::cairn_v1::BindRequest;
use cairn_proto::cairn_v1::plugins_client::PluginsClient;
use cairn_proto::etcdserverpb::PutRequest;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use clap::{Parser, Subcommand};
use tokio_stream::StreamExt;

/// The seconds a crashed process's worker registration or scheduler leadership outlives it.
const SESSION_TTL: i64 = 5;
const QUEUE: &str = "jobs";
const VISIBILITY: Duration = Duration::from_secs(10);

const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["job_every_ms", "job_cost_ms"],
  "properties": {
    "job_every_ms": {"type": "integer", "minimum": 100},
    "job_cost_ms": {"type": "integer", "minimum": 0, "maximum": 10000}
  },
  "additionalProperties": false
}"#;

#[derive(Parser)]
struct Cli {
    /// Cairn's client URLs, comma-separated.
    #[arg(long, env = "CAIRN_ENDPOINTS", default_value = "127.0.0.1:2379")]
    endpoints: String,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Store the config's schema, guard config/ with it, write the config.
    Setup,
    /// Lead the election `scheduler` when possible, pushing a job every `job_every_ms`.
    Scheduler { name: String },
    /// Register as a worker and run jobs from the queue.
    Worker {
        name: String,
        /// The port this worker says it serves on.
        #[arg(long, default_value_t = 9000)]
        port: u16,
    },
    /// Print the workers, then every change.
    Gateway,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = Client::connect(&cli.endpoints).await?;
    match cli.role {
        Role::Setup => setup(&client).await,
        Role::Scheduler { name } => scheduler(&client, &name).await,
        Role::Worker { name, port } => worker(&client, &name, port).await,
        Role::Gateway => gateway(&client).await,
    }
}

async fn put(client: &Client, key: &str, value: &str) -> Result<(), tonic::Status> {
    KvClient::new(client.channel().clone())
        .put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn setup(client: &Client) -> anyhow::Result<()> {
    put(client, "schemas/config/", CONFIG_SCHEMA).await?;
    PluginsClient::new(client.channel().clone())
        .bind(BindRequest {
            name: "schema".to_string(),
            prefix: b"config/".to_vec(),
            unbind: false,
        })
        .await?;
    put(
        client,
        "config/jobs",
        r#"{"job_every_ms": 1000, "job_cost_ms": 300}"#,
    )
    .await?;
    println!("config/jobs written");
    match put(client, "config/jobs", r#"{"job_every_ms": 10}"#).await {
        Err(status) => println!("an invalid config was refused: {}", status.message()),
        Ok(()) => bail!("the invalid config was accepted: is the schema plugin bound?"),
    }
    Ok(())
}

/// The config, as the schema guarantees it.
struct Config {
    job_every: Duration,
    job_cost: Duration,
}

async fn config(client: &Client) -> anyhow::Result<Config> {
    let response = KvClient::new(client.channel().clone())
        .range(cairn_proto::etcdserverpb::RangeRequest {
            key: b"config/jobs".to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let value = response
        .kvs
        .first()
        .context("no config/jobs: run `microservices setup` first")?;
    let config: serde_json::Value = serde_json::from_slice(&value.value)?;
    let millis = |field: &str| Duration::from_millis(config[field].as_u64().unwrap_or_default());
    Ok(Config {
        job_every: millis("job_every_ms"),
        job_cost: millis("job_cost_ms"),
    })
}

async fn scheduler(client: &Client, name: &str) -> anyhow::Result<()> {
    let config = config(client).await?;
    let session = client.session(SESSION_TTL).await?;
    println!("{name}: campaigning");
    let leadership = client.campaign("scheduler", name, &session).await?;
    println!("{name}: leading ({})", leadership.key());
    let mut next = 0u64;
    loop {
        tokio::select! {
            error = session.ended() => bail!("{name}: leadership lost: {error}"),
            () = tokio::time::sleep(config.job_every) => {
                next += 1;
                let body = format!("job {next} from {name}");
                client.push(QUEUE, &body, &PushOptions::default()).await?;
                println!("{name}: pushed {body:?}");
            }
        }
    }
}

async fn worker(client: &Client, name: &str, port: u16) -> anyhow::Result<()> {
    let config = config(client).await?;
    let instance = Instance {
        service: "worker".to_string(),
        id: name.to_string(),
        address: "127.0.0.1".to_string(),
        port,
        tags: vec!["demo".to_string()],
        metadata: Default::default(),
        health: Default::default(),
    };
    let registration = client.register(instance, SESSION_TTL).await?;
    println!("{name}: registered");
    let mut consumer = client.consumer(QUEUE, VISIBILITY);
    loop {
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery?,
            error = registration.lost() => bail!("{name}: registration lost: {error}"),
        };
        println!(
            "{name}: running {:?} (attempt {})",
            delivery.body, delivery.attempts
        );
        tokio::time::sleep(config.job_cost).await;
        if !consumer.ack(&delivery).await? {
            println!(
                "{name}: too late for {:?}: it went to another worker",
                delivery.body
            );
        }
    }
}

async fn gateway(client: &Client) -> anyhow::Result<()> {
    for instance in client.instances("worker", &Filter::default()).await? {
        println!(
            "worker {} at {}:{}",
            instance.id, instance.address, instance.port
        );
    }
    let (_, mut changes) = client.watch_service("worker").await?;
    while let Some(change) = changes.next().await {
        match change? {
            Change::Up(instance) => println!(
                "up: worker {} at {}:{}",
                instance.id, instance.address, instance.port
            ),
            Change::Down { id } => println!("down: worker {id}"),
        }
    }
    Ok(())
}
