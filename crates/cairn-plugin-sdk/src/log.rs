//! Messages returned to the caller with the result; the host bounds them per call and drops the
//! excess.

use crate::bindings::cairn::plugin::log as host;

/// Appends `message` to the call's log.
pub fn write(message: &str) {
    host::write(message)
}
