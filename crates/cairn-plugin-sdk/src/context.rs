//! Facts about the call, the same on every replica; a plugin's only clock and identity.

use crate::bindings::cairn::plugin::context as host;

/// The leader's wall-clock time when it appended the call to the log, in milliseconds since the
/// Unix epoch (the serving member's clock for read-only calls).
pub fn now_ms() -> u64 {
    host::now_ms()
}

/// The store revision the call reads at; its writes, if any, get the next one.
pub fn revision() -> i64 {
    host::revision()
}

/// Who called, as the server identified the client (`""` when anonymous).
pub fn caller() -> String {
    host::caller()
}

/// The lease the caller attached to the call, 0 for none.
pub fn lease() -> i64 {
    host::lease()
}
