//! Clusters of real `cairn` processes on loopback: each member with its own client and peer
//! ports and data directory, started, killed and restarted by the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{HashKvRequest, StatusRequest, StatusResponse};

use crate::{Server, cairn_binary, free_port};

/// How long a cluster may take to agree on a leader or to converge.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// One member's addresses and directory; the same spec restarts the same member.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    pub name: String,
    pub client_url: String,
    /// Where the member listens for peers.
    pub listen_peer_url: String,
    /// Where other members reach it; differs from the listen URL when a proxy sits between.
    pub peer_url: String,
    pub data_dir: PathBuf,
}

/// A cluster of `cairn` processes, killed when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub specs: Vec<MemberSpec>,
    servers: Vec<Option<Server>>,
    /// Flags every member starts with.
    flags: Vec<String>,
    /// `--initial-cluster` of the bootstrap members.
    initial_cluster: String,
}

impl Cluster {
    /// Starts `size` members as a new cluster, each with `flags`, and waits until they agree on
    /// a leader.
    pub async fn start(size: usize, flags: &[&str]) -> anyhow::Result<Cluster> {
        Cluster::start_with_peer_urls(size, flags, async |_, url| url.to_string()).await
    }

    /// As [`Cluster::start`], with the peer URL member `i` advertises given by `advertise(i,
    /// listen_url)`, so a test can put a proxy in front of each member.
    pub async fn start_with_peer_urls(
        size: usize,
        flags: &[&str],
        advertise: impl AsyncFn(usize, &str) -> String,
    ) -> anyhow::Result<Cluster> {
        Cluster::start_prepared(size, flags, advertise, |_| Ok(())).await
    }

    /// Starts `size` members as a new cluster from `backup`, restored into each member's data
    /// directory with `cairn snapshot restore` first, as an operator restores a cluster.
    pub async fn start_from_backup(size: usize, backup: &Path) -> anyhow::Result<Cluster> {
        let same_url = async |_, url: &str| url.to_string();
        Cluster::start_prepared(size, &[], same_url, |spec| {
            crate::snapshot_restore(backup, &spec.data_dir)
        })
        .await
    }

    /// As [`Cluster::start_with_peer_urls`], with `prepare` run on each member's spec before the
    /// member first starts.
    async fn start_prepared(
        size: usize,
        flags: &[&str],
        advertise: impl AsyncFn(usize, &str) -> String,
        prepare: impl Fn(&MemberSpec) -> anyhow::Result<()>,
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir().context("creating the cluster directory")?;
        let mut specs = Vec::new();
        for i in 0..size {
            let spec = new_spec(&dir, i);
            specs.push(MemberSpec {
                peer_url: advertise(i, &spec.listen_peer_url).await,
                ..spec
            });
        }
        let initial_cluster = specs
            .iter()
            .map(|spec| format!("{}={}", spec.name, spec.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            dir,
            servers: (0..size).map(|_| None).collect(),
            specs,
            flags: flags.iter().map(|flag| flag.to_string()).collect(),
            initial_cluster,
        };
        let mut starting = Vec::new();
        for i in 0..size {
            prepare(&cluster.specs[i])?;
            starting.push(cluster.spawn(i, "new")?);
        }
        for (i, mut server) in starting.into_iter().enumerate() {
            server.wait_ready().await?;
            cluster.servers[i] = Some(server);
        }
        cluster.leader().await?;
        // The leader deploys the bundled plugins as a cluster starts, a burst of large entries
        // every member compiles; tests start from a settled cluster rather than inside it.
        for i in 0..size {
            for plugin in crate::plugins::BUNDLED {
                crate::plugins::wait_deployed(cluster.endpoint(i), plugin).await;
            }
        }
        Ok(cluster)
    }

    fn spawn(&self, i: usize, state: &str) -> anyhow::Result<Server> {
        self.spawn_with(i, state, &[], &[])
    }

    /// Starts member `i` with `extra` flags after the cluster's and `env` in its environment.
    fn spawn_with(
        &self,
        i: usize,
        state: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let spec = &self.specs[i];
        let mut command = Command::new(cairn_binary());
        command
            .arg("serve")
            .args(["--name", &spec.name])
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args(["--listen-client-urls", &spec.client_url])
            .args(["--listen-peer-urls", &spec.listen_peer_url])
            .args(["--initial-advertise-peer-urls", &spec.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(&self.flags)
            .args(extra)
            .envs(env.iter().copied());
        Server::spawn(
            command,
            spec.client_url.clone(),
            spec.data_dir.with_extension("log"),
        )
    }

    pub fn size(&self) -> usize {
        self.specs.len()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.servers[i].is_some()
    }

    /// Indexes of the members that run.
    pub fn running(&self) -> Vec<usize> {
        (0..self.size()).filter(|&i| self.is_running(i)).collect()
    }

    /// Member `i`'s process ID, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].as_ref().and_then(Server::pid)
    }

    pub fn endpoint(&self, i: usize) -> &str {
        &self.specs[i].client_url
    }

    /// Client URLs of the running members, comma-separated, as etcdctl's `--endpoints` takes them.
    pub fn endpoints(&self) -> String {
        self.running()
            .into_iter()
            .map(|i| self.specs[i].client_url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(self.specs[i].data_dir.with_extension("log")).unwrap_or_default()
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut server) = self.servers[i].take() {
            server.kill();
        }
    }

    /// Restarts member `i` with the command line it first started with.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.restart_with(i, &[]).await
    }

    /// Restarts member `i` with the command line it first started with and `env`.
    pub async fn restart_with(&mut self, i: usize, env: &[(&str, &str)]) -> anyhow::Result<()> {
        assert!(!self.is_running(i), "member {i} is running");
        let mut server = self.spawn_with(i, "new", &[], env)?;
        server.wait_ready().await?;
        self.servers[i] = Some(server);
        Ok(())
    }

    /// Stops member `i` with SIGTERM, as an operator would, and waits until it has exited.
    pub fn stop(&mut self, i: usize) -> anyhow::Result<std::process::ExitStatus> {
        let mut server = self.servers[i].take().context("member not running")?;
        server.terminate()
    }

    /// Waits for member `i` to exit of its own accord, for at most `timeout`; returns how it
    /// ended, or fails if it still runs.
    pub fn exited(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let server = self.servers[i].as_mut().context("member not running")?;
        let status = server.wait_for_exit(timeout)?;
        self.servers[i] = None;
        Ok(status)
    }

    /// A spec for a member not yet in the cluster, to add with MemberAdd and then [`Cluster::join`].
    pub fn plan_member(&mut self) -> usize {
        let spec = new_spec(&self.dir, self.specs.len());
        self.specs.push(spec);
        self.servers.push(None);
        self.specs.len() - 1
    }

    /// Starts planned member `i` with `--initial-cluster-state existing`.
    pub async fn join(&mut self, i: usize) -> anyhow::Result<()> {
        self.join_with(i, &[]).await
    }

    /// As [`Cluster::join`], with `extra` flags after the cluster's.
    pub async fn join_with(&mut self, i: usize, extra: &[&str]) -> anyhow::Result<()> {
        let mut server = self.spawn_with(i, "existing", extra, &[])?;
        server.wait_ready().await?;
        self.servers[i] = Some(server);
        Ok(())
    }

    pub async fn maintenance(
        &self,
        i: usize,
    ) -> anyhow::Result<MaintenanceClient<tonic::transport::Channel>> {
        Ok(MaintenanceClient::connect(self.specs[i].client_url.clone()).await?)
    }

    pub async fn status(&self, i: usize) -> anyhow::Result<StatusResponse> {
        Ok(self
            .maintenance(i)
            .await?
            .status(StatusRequest {})
            .await?
            .into_inner())
    }

    /// Member `i`'s ID, from its response header.
    pub async fn member_id(&self, i: usize) -> anyhow::Result<u64> {
        let status = self.status(i).await?;
        Ok(status.header.context("status without a header")?.member_id)
    }

    /// Waits until every running member names the same leader, and returns its index.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("no agreed leader after {SETTLE_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn agreed_leader(&self) -> Option<usize> {
        let mut leaders = Vec::new();
        let mut ids = Vec::new();
        for i in self.running() {
            let status = self.status(i).await.ok()?;
            leaders.push(status.leader);
            ids.push((i, status.header?.member_id));
        }
        let leader = *leaders.first()?;
        if leader == 0 || leaders.iter().any(|&l| l != leader) {
            return None;
        }
        ids.into_iter()
            .find(|&(_, id)| id == leader)
            .map(|(i, _)| i)
    }

    /// Member `i`'s HashKV of its newest revision: (hash, revision).
    pub async fn hash_kv(&self, i: usize) -> anyhow::Result<(u32, i64)> {
        let response = self
            .maintenance(i)
            .await?
            .hash_kv(HashKvRequest { revision: 0 })
            .await?
            .into_inner();
        Ok((
            response.hash,
            response.header.context("no header")?.revision,
        ))
    }

    /// Waits until every running member has applied the log as far as the furthest one had when
    /// called: a request one member answered has then been applied (or refused) everywhere.
    pub async fn all_applied(&self) -> anyhow::Result<()> {
        let mut target = 0;
        for i in self.running() {
            target = target.max(self.status(i).await?.raft_applied_index);
        }
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let mut behind = Vec::new();
            for i in self.running() {
                if self.status(i).await?.raft_applied_index < target {
                    behind.push(i);
                }
            }
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("members {behind:?} did not apply index {target} within {SETTLE_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every running member reports the same revision and HashKV; returns them.
    pub async fn converged(&self) -> anyhow::Result<(u32, i64)> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let mut hashes = Vec::new();
            for i in self.running() {
                hashes.push(self.hash_kv(i).await.ok());
            }
            if let Some(Some(first)) = hashes.first()
                && hashes.iter().all(|hash| hash.as_ref() == Some(first))
            {
                return Ok(*first);
            }
            if Instant::now() > deadline {
                bail!("members did not converge within {SETTLE_TIMEOUT:?}: {hashes:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn new_spec(dir: &tempfile::TempDir, i: usize) -> MemberSpec {
    let listen_peer_url = format!("http://127.0.0.1:{}", free_port());
    MemberSpec {
        name: format!("m{i}"),
        client_url: format!("http://127.0.0.1:{}", free_port()),
        peer_url: listen_peer_url.clone(),
        listen_peer_url,
        data_dir: dir.path().join(format!("m{i}")),
    }
}
