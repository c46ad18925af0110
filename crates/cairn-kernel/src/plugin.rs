//! What the kernel needs from a plugin runtime, and what it gives one.
//!
//! Plugins run inside apply, so the kernel owns everything that must be the same on every
//! replica: which plugins are deployed (a log entry decides), what a call may read and write
//! ([`PluginHost`], over the call's transaction), the inputs a call sees ([`CallContext`]) and
//! what happens to the writes when the call fails (nothing is written). The runtime only runs
//! code; it is a trait here so that the kernel never depends on wasmtime.

use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::types::{KeyRange, KeyValue, LeaseId, Revision};

/// A component's identity: the sha256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::{Digest as _, Sha256};
        Digest(Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

/// What one call of a plugin may consume. Every limit is enforced identically on every replica,
/// so hitting one fails the call everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginLimits {
    /// WebAssembly fuel (roughly, instructions) per call.
    pub fuel: u64,
    /// Largest linear memory, in bytes.
    pub memory_bytes: u64,
    /// Largest result a call may return, in bytes.
    pub output_bytes: u64,
}

impl PluginLimits {
    /// About two seconds of computation: a call runs inside apply, and every write on every
    /// replica waits for it.
    pub const FUEL_MAX: u64 = 1_000_000_000;
    pub const MEMORY_BYTES_MAX: u64 = 256 << 20;
    pub const OUTPUT_BYTES_MAX: u64 = 4 << 20;
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            fuel: 100_000_000,
            memory_bytes: 16 << 20,
            output_bytes: 1 << 20,
        }
    }
}

/// What a deployer grants a plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Key prefixes the plugin may read and write; an empty prefix grants every key.
    pub prefixes: Vec<Vec<u8>>,
    pub limits: PluginLimits,
    /// Key prefixes whose writes the plugin validates (it must export the validator interface).
    pub hooks: Vec<Vec<u8>>,
}

impl Manifest {
    /// Whether every key of `range` lies inside one granted prefix.
    pub fn grants(&self, range: &KeyRange) -> bool {
        self.prefixes
            .iter()
            .any(|prefix| within_prefix(range, prefix))
    }
}

/// Which of Cairn's guest interfaces a component exports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exports {
    pub recipe: bool,
    pub validator: bool,
}

/// A deployed plugin, as every replica holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    pub version: String,
    pub digest: Digest,
    pub size: u64,
    pub exports: Exports,
    pub manifest: Manifest,
    /// The log index of the entry that deployed this version: the point at which every replica
    /// switched to it.
    pub deployed_index: u64,
    /// The runtime that deployed it ([`PluginRuntime::engine`]): fuel accounting and compiled
    /// code belong to one engine version, so a member running another refuses to run it.
    pub engine: String,
}

/// The inputs of one call besides its arguments, the same on every replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// The leader's clock when it appended the call, in ms since the Unix epoch.
    pub now_ms: u64,
    /// The revision the call reads at.
    pub revision: Revision,
    pub caller: String,
    pub lease: LeaseId,
    /// Seeds the call's PRNG; derived from the call's log position.
    pub seed: u64,
}

/// One key's new state in a request under validation: `None` deletes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposedWrite {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Why the host refused a plugin's kv operation; the plugin sees it and may carry on.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{0}")]
    Denied(String),
    #[error("this call may not write")]
    ReadOnly,
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    #[error("{0}")]
    TooLarge(String),
    /// The store failed: the call must stop and the node with it.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Key prefixes as messages name them: each quoted, comma-separated.
pub fn quoted_prefixes(prefixes: &[Vec<u8>]) -> String {
    prefixes
        .iter()
        .map(|prefix| format!("{:?}", String::from_utf8_lossy(prefix)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every item of `items`, unless there are more than `most`: then `None`, having taken no more
/// than `most + 1` of them. How a host's `delete_range` keeps to what the call can pay for.
pub fn at_most<T>(items: impl Iterator<Item = T>, most: u32) -> Option<Vec<T>> {
    let most = most as usize;
    let taken: Vec<T> = items.take(most.saturating_add(1)).collect();
    (taken.len() <= most).then_some(taken)
}

/// The store as a plugin call sees it: the call's transaction, confined to its manifest.
pub trait PluginHost {
    fn context(&self) -> &CallContext;
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyValue>, HostError>;
    /// At most `limit` keys of `range` in key order (0: the host's maximum), and whether more
    /// remain.
    fn range(&mut self, range: &KeyRange, limit: u32) -> Result<(Vec<KeyValue>, bool), HostError>;
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, lease: LeaseId) -> Result<(), HostError>;
    /// Deletes every live key of `range` and returns how many, unless there are more than
    /// `most`: then it deletes nothing, having looked at no more than `most + 1` keys, and
    /// returns `None`. The caller sets `most` to what it can still pay for, so a call cannot make
    /// the host walk a huge range it would fail on anyway.
    fn delete_range(&mut self, range: &KeyRange, most: u32) -> Result<Option<u32>, HostError>;
    /// Keeps a message for the caller; the host bounds how many it keeps.
    fn log(&mut self, message: String);
}

/// How a call failed. Each is decided by the code, its inputs and its limits alone, so every
/// replica fails a call the same way.
#[derive(Debug, thiserror::Error)]
pub enum PluginFailure {
    /// The plugin returned an error: its reason.
    #[error("{0}")]
    Returned(String),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("ran out of fuel (limit {0})")]
    OutOfFuel(u64),
    #[error("exceeded its memory limit of {0} bytes")]
    MemoryLimit(u64),
    #[error("returned {size} bytes, over its output limit of {limit}")]
    OutputTooLarge { size: u64, limit: u64 },
    #[error("has no function {0:?}")]
    NoSuchFunction(String),
    /// The store failed under the call; not a result, the node must stop.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// This member's runtime failed (it could not compile or instantiate what it ran before,
    /// say): not a result either, since other members may well succeed; the node must stop.
    #[error("the plugin runtime failed on this member: {0}")]
    Runtime(String),
}

/// Runs plugin code. Implementations must be deterministic: the same component, limits, inputs
/// and host answers give the same result and the same host calls on every replica.
pub trait PluginRuntime: Send + Sync {
    /// Names the engine, its version and the machine it compiles for, e.g. `wasmtime 48.0.8
    /// x86_64`: whatever could make a call's outcome differ.
    fn engine(&self) -> &str;

    /// Checks that `component` can run here and says what it exports; refuses it (with a reason
    /// naming the problem, such as an import outside `cairn:plugin`) otherwise.
    fn load(&self, digest: Digest, component: &[u8]) -> Result<Exports, String>;

    /// Calls the recipe function `function` of a loaded component.
    fn call(
        &self,
        plugin: &LoadedPlugin<'_>,
        function: &str,
        input: &[u8],
        host: &mut dyn PluginHost,
    ) -> Result<Vec<u8>, PluginFailure>;

    /// Asks a loaded validator whether `writes` may commit: `Ok(Err(reason))` rejects them.
    fn validate(
        &self,
        plugin: &LoadedPlugin<'_>,
        writes: &[ProposedWrite],
        host: &mut dyn PluginHost,
    ) -> Result<Result<(), String>, PluginFailure>;
}

/// What a runtime needs to run a deployed plugin.
pub struct LoadedPlugin<'a> {
    pub digest: Digest,
    pub component: &'a [u8],
    pub limits: PluginLimits,
}

/// Deploys `component` as plugin `name`, replacing any version deployed under that name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginDeployRequest {
    pub name: String,
    pub version: String,
    pub component: Vec<u8>,
    pub manifest: Manifest,
    /// The engine of the member that proposed the deploy ([`PluginRuntime::engine`]): every
    /// replica records this one, and one running another engine stops rather than diverge.
    pub engine: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginDeployResponse {
    pub record: PluginRecord,
    /// The version this deploy replaced, if any.
    pub replaced: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRemoveRequest {
    pub name: String,
}

/// Binds (`bound`) or unbinds a validator plugin to the writes under `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginBindRequest {
    pub name: String,
    pub prefix: Vec<u8>,
    pub bound: bool,
}

/// A plugin management command's answer: the plugin's record after it (before it, for a
/// removal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecordResponse {
    pub record: PluginRecord,
}

/// Calls `function` of plugin `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginCallRequest {
    pub name: String,
    pub function: String,
    pub input: Vec<u8>,
    pub caller: String,
    pub lease: LeaseId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginCallResponse {
    /// The store revision after the call: its writes' revision if it wrote.
    pub revision: Revision,
    pub output: Vec<u8>,
    pub logs: Vec<String>,
}

/// The key range of every key starting with `prefix`.
pub fn prefix_range(prefix: &[u8]) -> KeyRange {
    match prefix_end(prefix) {
        Some(end) => KeyRange::Interval {
            start: prefix.to_vec(),
            end,
        },
        None => KeyRange::From(prefix.to_vec()),
    }
}

/// The first key after every key that starts with `prefix`, if there is one.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Whether every key of `range` starts with `prefix`.
pub fn within_prefix(range: &KeyRange, prefix: &[u8]) -> bool {
    match range {
        KeyRange::Key(key) => key.starts_with(prefix),
        KeyRange::Interval { start, end } => {
            start.starts_with(prefix)
                && prefix_end(prefix).is_none_or(|bound| end.as_slice() <= bound.as_slice())
        }
        KeyRange::From(start) => start.starts_with(prefix) && prefix_end(prefix).is_none(),
    }
}

/// Whether some key of `range` starts with `prefix`.
pub fn overlaps_prefix(range: &KeyRange, prefix: &[u8]) -> bool {
    let (start, end) = match range {
        KeyRange::Key(key) => return key.starts_with(prefix),
        KeyRange::Interval { start, end } => (start.as_slice(), Some(end.as_slice())),
        KeyRange::From(start) => (start.as_slice(), None),
    };
    let below_prefix_end = prefix_end(prefix).is_none_or(|bound| start < bound.as_slice());
    let reaches_prefix = end.is_none_or(|end| end > prefix);
    below_prefix_end && reaches_prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(start: &str, end: &str) -> KeyRange {
        KeyRange::Interval {
            start: start.into(),
            end: end.into(),
        }
    }

    #[test]
    fn prefixes_bound_ranges() {
        assert_eq!(prefix_range(b"a/"), interval("a/", "a0"));
        assert_eq!(prefix_range(b""), KeyRange::From(Vec::new()));
        assert_eq!(
            prefix_range(b"a\xff"),
            KeyRange::Interval {
                start: b"a\xff".to_vec(),
                end: b"b".to_vec()
            }
        );
        assert!(within_prefix(&prefix_range(b"a/b"), b"a/"));
        assert!(within_prefix(&KeyRange::Key(b"a/x".to_vec()), b"a/"));
        assert!(!within_prefix(&interval("a/", "b"), b"a/"));
        assert!(!within_prefix(&KeyRange::From(b"a/".to_vec()), b"a/"));
        assert!(within_prefix(&KeyRange::From(b"z".to_vec()), b""));
    }

    #[test]
    fn overlaps_tell_whether_a_range_touches_a_prefix() {
        assert!(overlaps_prefix(&interval("a", "z"), b"b/"));
        assert!(overlaps_prefix(&KeyRange::From(b"a".to_vec()), b"b/"));
        assert!(!overlaps_prefix(&interval("c", "z"), b"b/"));
        assert!(!overlaps_prefix(&interval("a", "b/"), b"b/"));
        assert!(overlaps_prefix(&interval("a", "b/\0"), b"b/"));
        assert!(!overlaps_prefix(&KeyRange::Key(b"b".to_vec()), b"b/"));
    }
}
