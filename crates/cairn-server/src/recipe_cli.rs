//! The bundled recipes from the command line, over `cairn-client`: `cairn lock` and `cairn
//! elect` (as etcdctl's `lock` and `elect`), `cairn svc` (service discovery) and `cairn queue`.
//!
//! Locks, leaderships and registrations are held under a lease (a session) kept alive while the
//! command runs, so a process that dies without cleaning up gives them up once the lease's TTL
//! runs out.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_client::Client;
use cairn_client::discovery::{Change, Filter, Health, Instance};
use cairn_client::queue::PushOptions;
use clap::{Args, Subcommand};
use tokio_stream::StreamExt;

use crate::shutdown_signal;

#[derive(Args)]
pub struct Endpoints {
    /// Comma-separated client URLs of cluster members; the first that answers is used.
    #[arg(
        long,
        global = true,
        env = "CAIRN_ENDPOINTS",
        default_value = "127.0.0.1:2379"
    )]
    endpoints: String,
}

impl Endpoints {
    async fn connect(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.endpoints).await?)
    }
}

#[derive(Args)]
pub struct LockArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Seconds the lock outlives this process if it dies without releasing it.
    #[arg(long, default_value_t = 60)]
    ttl: i64,
    /// Give up waiting for the lock after this long (e.g. `10s`); waits as long as it takes
    /// otherwise.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// The lock's name.
    name: String,
    /// A command to run while holding the lock, with the lock's key and fencing token in
    /// `CAIRN_LOCK_KEY` and `CAIRN_LOCK_FENCING_TOKEN`; its exit status becomes this one's.
    /// Without one, prints the key and holds the lock until SIGINT or SIGTERM.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct ElectArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Seconds the leadership outlives this process if it dies without resigning.
    #[arg(long, default_value_t = 60)]
    ttl: i64,
    /// Print the election's leader and value at every change instead of campaigning.
    #[arg(short, long)]
    listen: bool,
    /// The election's name.
    name: String,
    /// The value to proclaim as leader; required unless --listen.
    #[arg(required_unless_present = "listen")]
    proposal: Option<String>,
}

#[derive(Args)]
pub struct SvcArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(subcommand)]
    command: SvcCommand,
}

#[derive(Subcommand)]
enum SvcCommand {
    /// Register an instance and keep it registered until interrupted (then deregister it).
    Register {
        service: String,
        id: String,
        /// Where the instance serves: HOST:PORT.
        address: String,
        /// A tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Metadata as KEY=VALUE (repeatable).
        #[arg(long = "meta", value_parser = key_value)]
        metadata: Vec<(String, String)>,
        #[arg(long, value_enum, default_value = "passing")]
        health: HealthArg,
        /// Seconds the instance stays listed if this process dies.
        #[arg(long, default_value_t = 10)]
        ttl: i64,
    },
    /// List a service's instances: ID, HOST:PORT, health and tags, one per line.
    List {
        service: String,
        /// Only instances with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only instances in this health.
        #[arg(long, value_enum)]
        health: Option<HealthArg>,
    },
    /// Print a service's instances, then every change (`UP ...`, `DOWN ID`), until interrupted.
    Watch { service: String },
    /// Remove an instance.
    Deregister { service: String, id: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum HealthArg {
    Passing,
    Warning,
    Critical,
}

impl From<HealthArg> for Health {
    fn from(health: HealthArg) -> Health {
        match health {
            HealthArg::Passing => Health::Passing,
            HealthArg::Warning => Health::Warning,
            HealthArg::Critical => Health::Critical,
        }
    }
}

#[derive(Args)]
pub struct QueueArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Append a message; prints its ID.
    Push {
        queue: String,
        body: String,
        /// Higher is delivered first.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// Not deliverable before this has passed (e.g. `30s`).
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: Option<Duration>,
        /// Deliveries before the message is dead-lettered.
        #[arg(long, default_value_t = 5)]
        max_attempts: u32,
    },
    /// Claim messages; prints RECEIPT, attempts and body, tab-separated, one per line.
    Claim {
        queue: String,
        /// How long the messages stay invisible to other consumers (e.g. `30s`).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        visibility: Duration,
        #[arg(long, default_value_t = 1)]
        max: u32,
    },
    /// Delete a claimed message.
    Ack { queue: String, receipt: String },
    /// Give a claimed message back (or dead-letter it, out of attempts).
    Nack {
        queue: String,
        receipt: String,
        /// Deliverable again after this (e.g. `5s`).
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: Option<Duration>,
    },
    /// How many messages the queue holds, by state.
    Len { queue: String },
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

pub async fn lock(args: LockArgs) -> anyhow::Result<i32> {
    let client = args.endpoints.connect().await?;
    let session = client.session(args.ttl).await?;
    let guard = match args.timeout {
        Some(timeout) => {
            client
                .lock_with_timeout(&args.name, &session, timeout)
                .await?
        }
        None => client.lock(&args.name, &session).await?,
    };
    let status = if args.command.is_empty() {
        println!("{}", guard.key());
        tokio::select! {
            () = shutdown_signal() => 0,
            error = session.ended() => return Err(anyhow::Error::new(error).context("the lock was lost")),
        }
    } else {
        let mut child = tokio::process::Command::new(&args.command[0])
            .args(&args.command[1..])
            .env("CAIRN_LOCK_KEY", guard.key())
            .env(
                "CAIRN_LOCK_FENCING_TOKEN",
                guard.fencing_token().to_string(),
            )
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {:?}", args.command[0]))?;
        tokio::select! {
            exit = child.wait() => exit?.code().unwrap_or(1),
            () = shutdown_signal() => 130,
            error = session.ended() => {
                return Err(anyhow::Error::new(error).context("the lock was lost; the command was killed"));
            }
        }
    };
    guard.release().await?;
    session.close().await?;
    Ok(status)
}

pub async fn elect(args: ElectArgs) -> anyhow::Result<i32> {
    let client = args.endpoints.connect().await?;
    if args.listen {
        let mut changes = client.observe(&args.name).await?;
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    Some(leader) => {
                        let leader = leader?;
                        println!("{}", leader.key);
                        println!("{}", String::from_utf8_lossy(&leader.value));
                    }
                    None => bail!("the server ended the observation"),
                },
                () = shutdown_signal() => return Ok(0),
            }
        }
    }
    let proposal = args.proposal.unwrap_or_default();
    let session = client.session(args.ttl).await?;
    let leadership = tokio::select! {
        leadership = client.campaign(&args.name, proposal.clone(), &session) => leadership?,
        () = shutdown_signal() => {
            session.close().await?;
            return Ok(130);
        }
    };
    println!("{}", leadership.key());
    println!("{proposal}");
    tokio::select! {
        () = shutdown_signal() => {}
        error = session.ended() => return Err(anyhow::Error::new(error).context("leadership was lost")),
    }
    leadership.resign().await?;
    session.close().await?;
    Ok(0)
}

pub async fn svc(args: SvcArgs) -> anyhow::Result<i32> {
    let client = args.endpoints.connect().await?;
    match args.command {
        SvcCommand::Register {
            service,
            id,
            address,
            tags,
            metadata,
            health,
            ttl,
        } => {
            let (host, port) = address
                .rsplit_once(':')
                .with_context(|| format!("{address:?} is not HOST:PORT"))?;
            let port = port
                .parse()
                .with_context(|| format!("{port:?} is not a port number"))?;
            let instance = Instance {
                service,
                id,
                address: host.to_string(),
                port,
                tags,
                metadata: metadata.into_iter().collect::<BTreeMap<_, _>>(),
                health: health.into(),
            };
            let registration = client.register(instance, ttl).await?;
            println!(
                "services/{}/{}",
                registration.instance().service,
                registration.instance().id
            );
            tokio::select! {
                () = shutdown_signal() => {}
                error = registration.lost() => return Err(anyhow::Error::new(error).context("the registration was lost")),
            }
            registration.deregister().await?;
        }
        SvcCommand::List {
            service,
            tag,
            health,
        } => {
            let filter = Filter {
                tag,
                health: health.map(Health::from),
            };
            for instance in client.instances(&service, &filter).await? {
                println!("{}", describe(&instance));
            }
        }
        SvcCommand::Watch { service } => {
            let (instances, mut changes) = client.watch_service(&service).await?;
            for instance in &instances {
                println!("UP {}", describe(instance));
            }
            loop {
                tokio::select! {
                    change = changes.next() => match change {
                        Some(Ok(Change::Up(instance))) => println!("UP {}", describe(&instance)),
                        Some(Ok(Change::Down { id })) => println!("DOWN {id}"),
                        Some(Err(error)) => return Err(error.into()),
                        None => bail!("the server ended the watch"),
                    },
                    () = shutdown_signal() => break,
                }
            }
        }
        SvcCommand::Deregister { service, id } => {
            if !client.deregister(&service, &id).await? {
                bail!("no instance {id:?} of service {service:?}");
            }
        }
    }
    Ok(0)
}

/// `ID HOST:PORT HEALTH [tags=a,b] [k=v ...]`.
fn describe(instance: &Instance) -> String {
    let mut line = format!(
        "{} {}:{} {}",
        instance.id,
        instance.address,
        instance.port,
        instance.health.as_str()
    );
    if !instance.tags.is_empty() {
        line.push_str(&format!(" tags={}", instance.tags.join(",")));
    }
    for (key, value) in &instance.metadata {
        line.push_str(&format!(" {key}={value}"));
    }
    line
}

pub async fn queue(args: QueueArgs) -> anyhow::Result<i32> {
    let client = args.endpoints.connect().await?;
    match args.command {
        QueueCommand::Push {
            queue,
            body,
            priority,
            delay,
            max_attempts,
        } => {
            let options = PushOptions {
                priority,
                delay: delay.unwrap_or_default(),
                max_attempts,
            };
            println!("{}", client.push(&queue, &body, &options).await?);
        }
        QueueCommand::Claim {
            queue,
            visibility,
            max,
        } => {
            for delivery in client.claim(&queue, visibility, max).await? {
                println!(
                    "{}\t{}\t{}",
                    delivery.receipt, delivery.attempts, delivery.body
                );
            }
        }
        QueueCommand::Ack { queue, receipt } => {
            if !client.ack(&queue, &receipt).await? {
                bail!("receipt {receipt:?} is stale: the message was delivered again, or acked");
            }
        }
        QueueCommand::Nack {
            queue,
            receipt,
            delay,
        } => {
            let nacked = client
                .nack(&queue, &receipt, delay.unwrap_or_default())
                .await?;
            match (nacked.requeued, nacked.dead) {
                (_, true) => println!("dead-lettered"),
                (true, false) => println!("requeued"),
                (false, false) => bail!("receipt {receipt:?} is stale"),
            }
        }
        QueueCommand::Len { queue } => {
            let lengths = client.queue_len(&queue).await?;
            println!(
                "ready {}, delayed {}, claimed {}, dead {}",
                lengths.ready, lengths.delayed, lengths.claimed, lengths.dead
            );
        }
    }
    Ok(0)
}
