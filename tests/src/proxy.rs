//! A fault-injecting TCP proxy for peer traffic: one listener in front of each member's peer
//! port, able to cut a member off from the rest as a network partition would.
//!
//! Members reach each other through the proxies (each advertises its proxy's URL), so cutting a
//! member means refusing and dropping two kinds of connection: those to its own proxy, and
//! those it opened to the others'. All of it is loopback, so the source of a connection is found
//! the way `ss -p` finds it: the client socket's inode in `/proc/net/tcp`, matched against the
//! sockets the member's process holds.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// The proxies of one cluster, sharing one partition state.
#[derive(Clone, Default)]
pub struct PeerProxies {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The member cut off, by proxy index and process ID.
    isolated: Option<(usize, u32)>,
    connections: Vec<Connection>,
}

struct Connection {
    target: usize,
    /// Inode of the client's end of the connection.
    client_inode: Option<u64>,
    forwarding: AbortHandle,
}

impl PeerProxies {
    /// Starts a proxy forwarding to `upstream` (host:port) and returns the URL it listens on;
    /// `target` names the member behind it.
    pub async fn add(&self, target: usize, upstream: String) -> std::io::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let proxies = self.clone();
        tokio::spawn(async move {
            while let Ok((client, peer)) = listener.accept().await {
                let client_inode = socket_inode(peer.port(), address.port());
                proxies.admit(target, client, client_inode, upstream.clone());
            }
        });
        Ok(format!("http://{address}"))
    }

    fn admit(&self, target: usize, client: TcpStream, client_inode: Option<u64>, upstream: String) {
        let mut state = self.state.lock().unwrap();
        if let Some((isolated, pid)) = state.isolated
            && (target == isolated || client_inode.is_some_and(|inode| owns(pid, inode)))
        {
            return;
        }
        let forwarding = tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let mut client = client;
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        })
        .abort_handle();
        state.connections.retain(|c| !c.forwarding.is_finished());
        state.connections.push(Connection {
            target,
            client_inode,
            forwarding,
        });
    }

    /// Cuts member `target`, running as process `pid`, off from every other member, dropping
    /// the connections it has.
    pub fn isolate(&self, target: usize, pid: u32) {
        let mut state = self.state.lock().unwrap();
        state.isolated = Some((target, pid));
        let inodes = socket_inodes_of(pid);
        state.connections.retain(|c| {
            let cut = c.target == target || c.client_inode.is_some_and(|i| inodes.contains(&i));
            if cut {
                c.forwarding.abort();
            }
            !cut
        });
    }

    /// Lets traffic flow again.
    pub fn heal(&self) {
        self.state.lock().unwrap().isolated = None;
    }
}

/// The inode of the loopback socket bound to `local_port` and connected to `remote_port`.
fn socket_inode(local_port: u16, remote_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
        (port(fields.get(1)?)? == local_port && port(fields.get(2)?)? == remote_port)
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

fn socket_inodes_of(pid: u32) -> HashSet<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

fn owns(pid: u32, inode: u64) -> bool {
    socket_inodes_of(pid).contains(&inode)
}
