//! Cairn's bundled lock: a fair FIFO mutex held under a lease, with etcd's v3lock semantics.
//!
//! A lock named `NAME` is the set of keys `NAME/<lease in hex>`, one per contender, each attached
//! to its contender's lease. The contender whose key was created first holds the lock; the others
//! wait in the order they came. Nothing else is stored, so whatever deletes the holder's key
//! (a release, a revoke, the lease running out) hands the lock to the next contender in the same
//! revision. The holder's fencing token is its key's create revision: it only grows from one
//! holder to the next, and a Txn can guard a write with `create_revision(key) == token`.
//!
//! Functions (JSON in, JSON out; names and keys are [`Bytes`]: strings, or arrays of byte values
//! when not UTF-8):
//! - `acquire {"name", "lease", "try"?}` joins the line (once per lease: acquiring again with
//!   the same lease is the same acquisition) and returns `{"key", "token", "held"}`. With
//!   `"try": true` it joins only a lock nobody holds and otherwise writes nothing and returns
//!   `{"key": "", "token": 0, "held": false}`. The server waits for `held` on the caller's behalf.
//! - `release {"key", "token"?}` deletes the key (only if created at `token`, when given) and
//!   returns `{"released"}`.
//! - `owner {"name"}` returns the holder `{"key", "lease", "token"}`, or `null`.

use cairn_plugin_sdk::json::{Bytes, parse, reply};
use cairn_plugin_sdk::{KeyValue, context, kv};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Acquire {
    name: Bytes,
    lease: i64,
    #[serde(default, rename = "try")]
    only_if_free: bool,
}

#[derive(Serialize)]
struct Acquired {
    key: Bytes,
    token: i64,
    held: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    key: Bytes,
    token: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Owner {
    name: Bytes,
}

#[derive(Serialize)]
struct Holder {
    key: Bytes,
    lease: i64,
    token: i64,
}

fn acquire(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Acquire = parse(input)?;
    if request.lease <= 0 {
        return Err("a lock is held under a lease: give the ID of a granted lease".into());
    }
    let key = [
        &request.name.0[..],
        format!("/{:x}", request.lease).as_bytes(),
    ]
    .concat();
    let line = waiting_line(&request.name.0)?;
    let acquired = if let Some(mine) = line.iter().find(|kv| kv.key == key) {
        Acquired {
            held: line[0].key == mine.key,
            token: mine.create_revision,
            key: Bytes(key),
        }
    } else if request.only_if_free && !line.is_empty() {
        Acquired {
            key: Bytes::default(),
            token: 0,
            held: false,
        }
    } else {
        kv::put_with_lease(&key, b"", request.lease).map_err(|e| e.to_string())?;
        Acquired {
            key: Bytes(key),
            token: context::revision() + 1,
            held: line.is_empty(),
        }
    };
    reply(&acquired)
}

fn release(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Release = parse(input)?;
    let current = kv::get(&request.key.0).map_err(|e| e.to_string())?;
    let released = match current {
        Some(kv)
            if request
                .token
                .is_none_or(|token| token == kv.create_revision) =>
        {
            kv::delete(&kv.key).map_err(|e| e.to_string())?
        }
        _ => false,
    };
    reply(&serde_json::json!({ "released": released }))
}

fn owner(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Owner = parse(input)?;
    let holder = waiting_line(&request.name.0)?
        .into_iter()
        .next()
        .map(|kv| Holder {
            key: Bytes(kv.key),
            lease: kv.lease,
            token: kv.create_revision,
        });
    reply(&holder)
}

/// The contenders for lock `name`, holder first.
fn waiting_line(name: &[u8]) -> Result<Vec<KeyValue>, String> {
    let prefix = [name, b"/"].concat();
    let mut line = kv::scan_prefix(&prefix).map_err(|e| e.to_string())?;
    line.sort_by_key(|kv| kv.create_revision);
    Ok(line)
}

cairn_plugin_sdk::recipe! {
    "acquire" => acquire,
    "release" => release,
    "owner" => owner,
}
