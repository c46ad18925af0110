//! Harness for cross-process tests: real `cairn` and `etcd` processes on loopback, each with its
//! own free port and temporary data directory, killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_proto::etcdserverpb::StatusRequest;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::Channel;

pub mod cluster;
pub mod etcdctl;
pub mod plugins;
pub mod proxy;

/// How long a server may take to answer its first request.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The `cairn` binary under test: `$CAIRN_BIN`, or the one cargo built beside this test.
pub fn cairn_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CAIRN_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/cairn
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("cairn"))
        .expect("test executable lives in target/<profile>/deps");
    assert!(
        path.exists(),
        "{} not found: build it first (`make test` does) or set CAIRN_BIN",
        path.display()
    );
    path
}

/// Ports handed out by [`free_port`]: below Linux's ephemeral range (32768 and up), so no
/// outgoing connection of a test or a server can take one between the check and the bind.
const PORTS: std::ops::Range<u16> = 20_000..32_000;
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A port on 127.0.0.1 that was free a moment ago and that no other call in this process has
/// returned. The starting point depends on the process ID, so test binaries that happen to run
/// at once start far apart.
pub fn free_port() -> u16 {
    let span = PORTS.end - PORTS.start;
    let start = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let offset = (start + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % span) % span;
        let port = PORTS.start + offset;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?}");
}

/// Polls until `check` holds; fails the test, naming `what`, after 60 s.
pub async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server process that is killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub endpoint: String,
    log: PathBuf,
}

impl Server {
    pub(crate) fn spawn(
        mut command: Command,
        endpoint: String,
        log: PathBuf,
    ) -> anyhow::Result<Server> {
        let log_file = std::fs::File::create(&log).context("creating the server log")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        Ok(Server {
            child: Some(child),
            endpoint,
            log,
        })
    }

    /// Waits until the server answers a Status request.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait()? {
                bail!(
                    "server exited with {status} before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            if let Ok(mut client) = MaintenanceClient::connect(self.endpoint.clone()).await
                && client.status(StatusRequest {}).await.is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "server not ready after {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub async fn kv(&self) -> anyhow::Result<KvClient<Channel>> {
        Ok(KvClient::connect(self.endpoint.clone()).await?)
    }

    /// SIGKILL: no chance to flush or clean up, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit and returns how it ended.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("server already stopped")?;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("server still running {STARTUP_TIMEOUT:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit of its own accord, for at most `timeout`; returns how it
    /// ended, or fails, leaving it running, if it has not.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("server already stopped")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "server still running after {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `cairn serve` on a free port with its data in `data_dir`.
pub async fn start_cairn(data_dir: &Path) -> anyhow::Result<Server> {
    start_cairn_on(data_dir, free_port()).await
}

/// Starts `cairn serve` on `port`; restarting on the same port and directory restarts the member.
pub async fn start_cairn_on(data_dir: &Path, port: u16) -> anyhow::Result<Server> {
    start_cairn_with(data_dir, port, &[]).await
}

/// Starts a one-member `cairn serve` on `port` with extra flags. Its peer port is picked on the
/// first start and kept beside the data directory, since the member's ID derives from it.
pub async fn start_cairn_with(
    data_dir: &Path,
    port: u16,
    flags: &[&str],
) -> anyhow::Result<Server> {
    let url = format!("http://127.0.0.1:{port}");
    let peer_port_file = data_dir.with_extension("peer-port");
    let peer_port = match std::fs::read_to_string(&peer_port_file) {
        Ok(port) => port
            .trim()
            .parse()
            .context("reading the remembered peer port")?,
        Err(_) => {
            let port = free_port();
            std::fs::write(&peer_port_file, port.to_string())?;
            port
        }
    };
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut command = Command::new(cairn_binary());
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen-client-urls")
        .arg(&url)
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(flags);
    let log = data_dir.with_extension("log");
    let mut server = Server::spawn(command, url, log)?;
    server.wait_ready().await?;
    Ok(server)
}

/// Runs `cairn snapshot restore BACKUP --data-dir DATA_DIR`; fails with what it printed.
pub fn snapshot_restore(backup: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let restored = Command::new(cairn_binary())
        .args(["snapshot", "restore"])
        .arg(backup)
        .arg("--data-dir")
        .arg(data_dir)
        .output()?;
    anyhow::ensure!(
        restored.status.success(),
        "restoring {} into {}: {}",
        backup.display(),
        data_dir.display(),
        String::from_utf8_lossy(&restored.stderr)
    );
    Ok(())
}

/// Starts a single-member etcd (Debian's etcd-server) in `dir`. Fails, never skips, when etcd is
/// missing: the comparison is the point of the tests that call this.
pub async fn start_etcd(dir: &Path) -> anyhow::Result<Server> {
    let client_url = format!("http://127.0.0.1:{}", free_port());
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let mut command = Command::new("etcd");
    command
        .args(["--name", "reference"])
        .arg("--data-dir")
        .arg(dir.join("etcd-data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("reference={peer_url}")]);
    let mut server = Server::spawn(command, client_url, dir.join("etcd.log"))
        .context("is Debian's etcd-server installed? `make test` installs it")?;
    server.wait_ready().await?;
    Ok(server)
}
