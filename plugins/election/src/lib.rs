//! Cairn's bundled election, with etcd's v3election semantics.
//!
//! An election named `NAME` is the set of keys `NAME/<lease in hex>`, one per candidate, each
//! attached to its candidate's lease and holding the value it proclaims. The candidate whose key
//! was created first leads; the others wait in the order they came. When the leader's key goes
//! (it resigns, or its lease ends) the next candidate leads, in the same revision. A leadership
//! is identified by its key and the key's create revision (`rev`), which a Txn can compare to act
//! only while it lasts.
//!
//! Functions (JSON in, JSON out; names, keys and values are [`Bytes`]: strings, or arrays of
//! byte values when not UTF-8):
//! - `campaign {"name", "lease", "value"}` enters the candidate (once per lease: campaigning
//!   again with the same lease proclaims the new value) and returns `{"key", "rev", "leader"}`.
//!   The server waits for `leader` on the caller's behalf.
//! - `proclaim {"key", "rev", "value"}` sets a candidate's value, failing with `election: not
//!   leader` when the key is gone or was created at another revision.
//! - `resign {"key", "rev"}` withdraws the candidate created at `rev`; returns `{"resigned"}`.
//! - `leader {"name"}` returns the leader `{"key", "value", "rev", "lease"}`, or `null`.

use cairn_plugin_sdk::json::{Bytes, parse, reply};
use cairn_plugin_sdk::{KeyValue, context, kv};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Campaign {
    name: Bytes,
    lease: i64,
    #[serde(default)]
    value: Bytes,
}

#[derive(Serialize)]
struct Candidate {
    key: Bytes,
    rev: i64,
    leader: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Proclaim {
    key: Bytes,
    rev: i64,
    value: Bytes,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resign {
    key: Bytes,
    rev: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Leader {
    name: Bytes,
}

#[derive(Serialize)]
struct Leadership {
    key: Bytes,
    value: Bytes,
    rev: i64,
    lease: i64,
}

const NOT_LEADER: &str = "election: not leader";

fn campaign(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Campaign = parse(input)?;
    if request.lease <= 0 {
        return Err("a candidate stands under a lease: give the ID of a granted lease".into());
    }
    let key = [
        &request.name.0[..],
        format!("/{:x}", request.lease).as_bytes(),
    ]
    .concat();
    let line = candidates(&request.name.0)?;
    let rev = match line.iter().find(|kv| kv.key == key) {
        Some(mine) => {
            if mine.value != request.value.0 {
                kv::put_with_lease(&mine.key, &request.value.0, mine.lease)
                    .map_err(|e| e.to_string())?;
            }
            mine.create_revision
        }
        None => {
            kv::put_with_lease(&key, &request.value.0, request.lease).map_err(|e| e.to_string())?;
            context::revision() + 1
        }
    };
    let leader = line.first().is_none_or(|first| first.key == key);
    reply(&Candidate {
        key: Bytes(key),
        rev,
        leader,
    })
}

fn proclaim(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Proclaim = parse(input)?;
    let current = kv::get(&request.key.0).map_err(|e| e.to_string())?;
    match current {
        Some(kv) if kv.create_revision == request.rev => {
            kv::put_with_lease(&kv.key, &request.value.0, kv.lease).map_err(|e| e.to_string())?;
            reply(&serde_json::json!({}))
        }
        _ => Err(NOT_LEADER.into()),
    }
}

fn resign(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Resign = parse(input)?;
    let current = kv::get(&request.key.0).map_err(|e| e.to_string())?;
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
    let leadership = candidates(&request.name.0)?
        .into_iter()
        .next()
        .map(|kv| Leadership {
            key: Bytes(kv.key),
            value: Bytes(kv.value),
            rev: kv.create_revision,
            lease: kv.lease,
        });
    reply(&leadership)
}

/// The candidates of election `name`, leader first.
fn candidates(name: &[u8]) -> Result<Vec<KeyValue>, String> {
    let prefix = [name, b"/"].concat();
    let mut line = kv::scan_prefix(&prefix).map_err(|e| e.to_string())?;
    line.sort_by_key(|kv| kv.create_revision);
    Ok(line)
}

cairn_plugin_sdk::recipe! {
    "campaign" => campaign,
    "proclaim" => proclaim,
    "resign" => resign,
    "leader" => leader,
}
