//! The waiting lines of the lock and election recipes, read and waited on by the server.
//!
//! A line is every key under `NAME/` in create-revision order; its first key holds the lock or
//! leads the election. The plugins change lines through the log, and every member applies the
//! same entries in the same order, so a key that heads its line at revision R on this member
//! heads it at R on every member. A server therefore waits for a client's turn by watching its
//! own apply path, without asking the leader.

use std::sync::Mutex;
use std::time::Duration;

use cairn_kernel::plugin::prefix_range;
use cairn_kernel::{
    Event, EventKind, Kernel, KeyValue, RangeRequest, Revision, SortOrder, SortTarget,
};
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::node::SharedNode;
use crate::status::kernel_status;

/// How often a waiter looks at its line even when no announcement of an apply touched it: a
/// snapshot install changes the store without one.
const RECHECK: Duration = Duration::from_secs(1);

/// The prefix of the line of lock or election `name`.
pub fn prefix(name: &[u8]) -> Vec<u8> {
    [name, b"/"].concat()
}

/// A line's keys, first in line first, as this member's kernel has them now.
pub fn read(kernel: &Kernel, prefix: &[u8]) -> Result<Vec<KeyValue>, Status> {
    let request = RangeRequest {
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..RangeRequest::new(prefix_range(prefix))
    };
    Ok(kernel
        .range(&request)
        .map_err(|error| kernel_status(&error))?
        .kvs)
}

/// Waits until the key `key`, created at revision `token`, heads the line under `prefix`, and
/// returns the revision at which it does. `known` is a revision the caller knows to include the
/// key's creation; this member may not have applied it yet. Fails with FAILED_PRECONDITION
/// `gone` if the key is deleted (or replaced) first: its lease ended, or someone deleted it.
pub async fn wait_for_turn(
    node: &SharedNode,
    prefix: &[u8],
    key: &[u8],
    token: Revision,
    known: Revision,
    gone: &str,
) -> Result<Revision, Status> {
    // Only two changes can end the wait: the deletion of the key just ahead in line, or of this
    // key. Keys that join later line up behind it, and a deletion further ahead leaves the key
    // just ahead in place, so the waiters of a busy line do not all read it after every change.
    let ahead: Mutex<Option<Vec<u8>>> = Mutex::default();
    let ahead_key = || ahead.lock().expect("key ahead poisoned");
    let moves_up = |event: &Event| {
        event.kind == EventKind::Delete
            && (event.kv.key == key || ahead_key().as_deref() == Some(event.kv.key.as_slice()))
    };
    wait_until(node, known, moves_up, |kernel| {
        let keys = read(kernel, prefix)?;
        match keys
            .iter()
            .position(|kv| kv.key == key && kv.create_revision == token)
        {
            Some(0) => Ok(Some(kernel.revision())),
            Some(position) => {
                *ahead_key() = Some(keys[position - 1].key.clone());
                Ok(None)
            }
            None => Err(Status::failed_precondition(gone)),
        }
    })
    .await
}

/// Calls `check` on this member's kernel once it has applied revision `known`, and again after
/// every apply with an event that `matters`, until it gives an answer.
pub async fn wait_until<T>(
    node: &SharedNode,
    known: Revision,
    matters: impl Fn(&Event) -> bool,
    mut check: impl FnMut(&Kernel) -> Result<Option<T>, Status>,
) -> Result<T, Status> {
    // Subscribed before each look at the kernel, so that no apply after it goes unannounced.
    let mut applied = node.replica.subscribe();
    loop {
        let caught_up = {
            let kernel = node.replica.kernel().read().await;
            let caught_up = kernel.revision() >= known;
            if caught_up && let Some(answer) = check(&kernel)? {
                return Ok(answer);
            }
            caught_up
        };
        loop {
            match tokio::time::timeout(RECHECK, applied.recv()).await {
                Ok(Ok(events)) => {
                    let relevant = if caught_up {
                        events.events.iter().any(&matters)
                    } else {
                        events.revision >= known
                    };
                    if relevant {
                        break;
                    }
                }
                Ok(Err(RecvError::Lagged(_))) | Err(_) => break,
                Ok(Err(RecvError::Closed)) => {
                    return Err(Status::unavailable("etcdserver: server stopped"));
                }
            }
        }
    }
}
