//! For recipe functions that take and return JSON (the `json` feature): the input parsed, with
//! the same `bad input: ...` reason for every plugin, and the output serialised.

use serde::{Deserialize, Serialize};

/// The function's input as `T`, or the reason it is not one.
pub fn parse<'a, T: Deserialize<'a>>(input: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(input).map_err(|e| format!("bad input: {e}"))
}

/// `output` as the function's result.
pub fn reply(output: &impl Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec(output).map_err(|e| e.to_string())
}
