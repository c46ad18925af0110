//! Pseudo-random numbers seeded from the call's log position, so every replica draws the same.

use crate::bindings::cairn::plugin::random as host;

/// The next number of the call's sequence.
pub fn next_u64() -> u64 {
    host::next_u64()
}
