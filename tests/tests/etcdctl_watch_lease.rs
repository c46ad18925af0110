//! Debian's etcdctl 3.4 watching, leasing, locking and electing against a three-member cairn and
//! against etcd: the same session prints the same thing on both.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_tests::cluster::Cluster;
use cairn_tests::etcdctl::Etcdctl;
use cairn_tests::start_etcd;

/// An etcdctl command left running (a watch, a campaign), stopped by the session.
struct Running(Child);

impl Running {
    fn start(endpoints: &str, args: &[&str]) -> Running {
        let child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoints])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl runs");
        Running(child)
    }

    /// Sends `signal` (etcdctl resigns and closes its session on INT) and returns what it
    /// printed.
    fn stop(self, signal: &str) -> String {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = self.0.wait_with_output().unwrap();
        String::from_utf8(output.stdout).unwrap()
    }
}

async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Replaces each lease ID (hex, as etcdctl prints them) by its order of first appearance, and
/// the remaining seconds of a lease by `N`, which depend on timing.
fn normalize(transcript: &str, lease_ids: &[String]) -> String {
    let mut text = transcript.to_string();
    for (n, id) in lease_ids.iter().enumerate() {
        text = text.replace(id, &format!("<lease {}>", n + 1));
    }
    let mut out = String::new();
    for line in text.lines() {
        match line.find("remaining(") {
            Some(at) => {
                let end = at + line[at..].find(')').unwrap();
                out.push_str(&line[..at]);
                out.push_str("remaining(N");
                out.push_str(&line[end..]);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The lease ID in `lease <id> granted with TTL(..)`.
fn granted_id(output: &str) -> String {
    output.split_whitespace().nth(1).unwrap().to_string()
}

/// One session of etcdctl against `endpoints`, as a transcript.
async fn session(endpoints: &str) -> String {
    let ctl = Etcdctl::new(endpoints);
    let mut transcript = String::new();
    let mut lease_ids = Vec::new();
    let mut record = |label: &str, output: String| {
        transcript.push_str(&format!("## {label}\n{output}"));
    };

    // Revisions 2..=6.
    ctl.ok(&["put", "a/1", "one"]);
    ctl.ok(&["put", "a/2", "two"]);
    ctl.ok(&["put", "a/1", "uno"]);
    ctl.ok(&["del", "a/2"]);
    ctl.ok(&["put", "b", "x"]);

    // Replay from history, then live events, on one watch each.
    let replay = Running::start(
        endpoints,
        &["watch", "--prefix", "a/", "--rev", "2", "--prev-kv"],
    );
    let key = Running::start(endpoints, &["watch", "a/1", "--rev", "3"]);
    let live = Running::start(endpoints, &["watch", "--prefix", "c/", "--prev-kv"]);
    pause(1000).await;
    ctl.ok(&["put", "c/1", "v"]);
    ctl.ok(&["put", "c/1", "w"]);
    ctl.ok(&["del", "c/", "--prefix"]);
    ctl.ok(&["put", "a/3", "three"]);
    pause(1000).await;
    record("watch --prefix a/ --rev 2 --prev-kv", replay.stop("TERM"));
    record("watch a/1 --rev 3", key.stop("TERM"));
    record("watch --prefix c/ --prev-kv", live.stop("TERM"));

    // Leases.
    let long = ctl.ok(&["lease", "grant", "100"]);
    lease_ids.push(granted_id(&long));
    record("lease grant 100", long);
    let short = ctl.ok(&["lease", "grant", "1"]);
    lease_ids.push(granted_id(&short));
    record("lease grant 1 (raised to the minimum TTL)", short);
    let id = lease_ids[0].clone();
    record(
        "put --lease",
        ctl.ok(&["put", "held", "v", &format!("--lease={id}")]),
    );
    record(
        "lease timetolive --keys",
        ctl.ok(&["lease", "timetolive", &id, "--keys"]),
    );
    let mut listed: Vec<String> = ctl
        .ok(&["lease", "list"])
        .lines()
        .map(str::to_string)
        .collect();
    // etcd lists leases in map order; the set is what matters, so list them in grant order
    // (sorting the IDs themselves would not do: they differ between runs and servers).
    listed[1..].sort_by_key(|line| lease_ids.iter().position(|id| id == line));
    record("lease list", listed.join("\n") + "\n");
    record(
        "lease keep-alive --once",
        ctl.ok(&["lease", "keep-alive", "--once", &id]),
    );
    pause(3000).await;
    record(
        "the short lease expired",
        ctl.ok(&["lease", "timetolive", &lease_ids[1]]),
    );
    record("lease revoke", ctl.ok(&["lease", "revoke", &id]));
    record("its key is gone", ctl.ok(&["get", "held"]));
    record(
        "lease timetolive after revoke",
        ctl.ok(&["lease", "timetolive", &id]),
    );
    record("lease list after", ctl.ok(&["lease", "list"]));

    // etcdctl's lock recipe: two holders never overlap.
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = log.path().to_str().unwrap().to_string();
    let holders: Vec<Child> = (0..2)
        .map(|_| {
            let script = format!("echo in >> {log_path}; sleep 1; echo out >> {log_path}");
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    endpoints,
                    "lock",
                    "mutex",
                    "--",
                    "sh",
                    "-c",
                    &script,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcdctl runs")
        })
        .collect();
    for mut holder in holders {
        assert!(holder.wait().unwrap().success());
    }
    record("lock holders", std::fs::read_to_string(&log_path).unwrap());

    // etcdctl's election recipe: one leader at a time; resigning hands over.
    let observer = Running::start(endpoints, &["elect", "-l", "election"]);
    let first = Running::start(endpoints, &["elect", "election", "p1"]);
    pause(1000).await;
    let second = Running::start(endpoints, &["elect", "election", "p2"]);
    pause(1000).await;
    record("first candidate", first.stop("INT"));
    pause(1500).await;
    record("second candidate", second.stop("INT"));
    pause(500).await;
    record("observer", observer.stop("TERM"));

    let with_leases = normalize(&transcript, &lease_ids);
    // Election keys end in the campaigner's lease ID, which differs between runs.
    with_leases
        .lines()
        .map(|line| match line.strip_prefix("election/") {
            Some(_) => "election/<lease>",
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_watch_lease_lock_and_elect_match_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path()).await.unwrap();
    let cluster = Cluster::start(3, &[]).await.unwrap();

    let expected = session(&etcd.endpoint).await;
    let actual = session(&cluster.endpoints()).await;
    eprintln!("{actual}");
    assert!(
        expected.contains("## lock holders\nin\nout\nin\nout\n"),
        "{expected}"
    );
    assert!(expected.contains("p2"), "{expected}");
    assert_eq!(actual, expected);
}
