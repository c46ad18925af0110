//! Cairn's bundled election, with etcd's v3election semantics.
//!
//! An election named `NAME` is the set of keys `NAME/<lease in hex>`, one per candidate, each
//! attached to its candidate's lease and holding the value it proclaims. The candidate whose key
//! was created first leads; the others wait in the order they came. When the leader's key goes
//! (it resigns, or its lease ends) the next candidate leads, in the same revision. A leadership
//! is identified by its key and the key's create revision (`rev`), which a Txn can compare to act
//! only while it lasts.
//!
//! Functions (JSON in, JSON out; values are UTF-8 text):
//! - `campaign {"name", "lease", "value"}` enters the candidate (once per lease: campaigning
//!   again with the same lease proclaims the new value) and returns `{"key", "rev", "leader"}`.
//!   The server waits for `leader` on the caller's behalf.
//! - `proclaim {"key", "rev", "value"}` sets a candidate's value, failing with `election: not
//!   leader` when the key is gone or was created at another revision.
//! - `resign {"key", "rev"}` withdraws the candidate created at `rev`; returns `{"resigned"}`.
//! - `leader {"name"}` returns the leader `{"key", "value", "rev", "lease"}`, or `null`.

use cairn_plugin_sdk::json::{parse, reply};
use cairn_plugin_sdk::{KeyValue, context, kv};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Campaign {
    name: String,
    lease: i64,
    #[serde(default)]
    value: String,
}

#[derive(Serialize)]
struct Candidate {
    key: String,
    rev: i64,
    leader: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Proclaim {
    key: String,
    rev: i64,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resign {
    key: String,
    rev: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Leader {
    name: String,
}

#[derive(Serialize)]
struct Leadership {
    key: String,
    value: String,
    rev: i64,
    lease: i64,
}

const NOT_LEADER: &str = "election: not leader";

fn campaign(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Campaign = parse(input)?;
    if request.lease <= 0 {
        return Err("a candidate stands under a lease: give the ID of a granted lease".into());
    }
    let key = format!("{}/{:x}", request.name, request.lease);
    let line = candidates(&request.name)?;
    let rev = match line.iter().find(|kv| kv.key == key.as_bytes()) {
        Some(mine) => {
            if mine.value != request.value.as_bytes() {
                kv::put_with_lease(&mine.key, request.value.as_bytes(), mine.lease)
                    .map_err(|e| e.to_string())?;
            }
            mine.create_revision
        }
        None => {
            kv::put_with_lease(key.as_bytes(), request.value.as_bytes(), request.lease)
                .map_err(|e| e.to_string())?;
            context::revision() + 1
        }
    };
    let leader = line.first().is_none_or(|first| first.key == key.as_bytes());
    reply(&Candidate { key, rev, leader })
}

fn proclaim(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Proclaim = parse(input)?;
    let current = kv::get(request.key.as_bytes()).map_err(|e| e.to_string())?;
    match current {
        Some(kv) if kv.create_revision == request.rev => {
            kv::put_with_lease(&kv.key, request.value.as_bytes(), kv.lease)
                .map_err(|e| e.to_string())?;
            reply(&serde_json::json!({}))
        }
        _ => Err(NOT_LEADER.into()),
    }
}

fn resign(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Resign = parse(input)?;
    let current = kv::get(request.key.as_bytes()).map_err(|e| e.to_string())?;
    let resigned = match current {
        Some(kv) if kv.create_revision == request.rev => {
            kv::delete(&kv.key).map_err(|e| e.to_string())?
        }
        _ => false,
    };
    reply(&serde_json::json!({ "resigned": resigned }))
}

fn leader(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Leader = parse(input)?;
    let leadership = candidates(&request.name)?
        .into_iter()
        .next()
        .map(|kv| Leadership {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value: String::from_utf8_lossy(&kv.value).into_owned(),
            rev: kv.create_revision,
            lease: kv.lease,
        });
    reply(&leadership)
}

/// The candidates of election `name`, leader first.
fn candidates(name: &str) -> Result<Vec<KeyValue>, String> {
    let prefix = format!("{name}/");
    let mut line = kv::scan_prefix(prefix.as_bytes()).map_err(|e| e.to_string())?;
    line.sort_by_key(|kv| kv.create_revision);
    Ok(line)
}

cairn_plugin_sdk::recipe! {
    "campaign" => campaign,
    "proclaim" => proclaim,
    "resign" => resign,
    "leader" => leader,
}
