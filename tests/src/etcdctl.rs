//! Debian's etcdctl 3.4, run as a user runs it, with what it prints captured.

use std::io::Write;
use std::process::{Command, Stdio};

/// etcdctl pointed at one or more endpoints (comma-separated, as `--endpoints` takes them).
pub struct Etcdctl {
    pub endpoints: String,
}

pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Etcdctl {
    pub fn new(endpoints: impl Into<String>) -> Etcdctl {
        Etcdctl {
            endpoints: endpoints.into(),
        }
    }

    /// Runs `etcdctl ARGS`, with `stdin` on its standard input.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&self.endpoints)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl runs (Debian's etcd-client; `make test` installs it)");
        let mut input = child.stdin.take().expect("piped stdin");
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .expect("writing etcdctl's stdin");
        drop(input);
        let output = child.wait_with_output().expect("etcdctl finishes");
        Output {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed and returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args, None);
        assert!(output.ok, "etcdctl {args:?} failed: {}", output.stderr);
        output.stdout
    }

    /// Runs a command that must fail and returns its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args, None);
        assert!(!output.ok, "etcdctl {args:?} succeeded: {}", output.stdout);
        output.stderr
    }
}

/// etcdctl's `-w json` output, parsed.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
