//! The functions' inputs, with their defaults and bounds, and their replies.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Most messages one claim, peek or dead call returns.
const BATCH_MAX: u32 = 100;

/// An input that checks its own bounds once parsed.
pub trait Request: DeserializeOwned {
    fn check(&self) -> Result<(), String>;
}

/// Parses and checks a function's input.
pub fn parse<T: Request>(input: &[u8]) -> Result<T, String> {
    let request: T = cairn_plugin_sdk::json::parse(input)?;
    request.check()?;
    Ok(request)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Push {
    pub queue: String,
    pub body: String,
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

impl Request for Push {
    fn check(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub queue: String,
    #[serde(default = "default_visibility_ms")]
    pub visibility_ms: u64,
    #[serde(default = "default_claim_max")]
    pub max: u32,
}

impl Request for Claim {
    fn check(&self) -> Result<(), String> {
        if self.visibility_ms == 0 {
            return Err("visibility_ms must be at least 1".into());
        }
        check_max(self.max)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub queue: String,
    pub receipt: String,
}

impl Request for Ack {
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nack {
    pub queue: String,
    pub receipt: String,
    #[serde(default)]
    pub delay_ms: u64,
}

impl Request for Nack {
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// `len`'s input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Len {
    pub queue: String,
}

impl Request for Len {
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The input of `peek` and `dead`, which list messages without changing them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    pub queue: String,
    #[serde(default = "default_list_max")]
    pub max: u32,
}

impl Request for List {
    fn check(&self) -> Result<(), String> {
        check_max(self.max)
    }
}

fn check_max(max: u32) -> Result<(), String> {
    if !(1..=BATCH_MAX).contains(&max) {
        return Err(format!("max must be between 1 and {BATCH_MAX}"));
    }
    Ok(())
}

fn default_max_attempts() -> u32 {
    5
}

fn default_visibility_ms() -> u64 {
    30_000
}

fn default_claim_max() -> u32 {
    1
}

fn default_list_max() -> u32 {
    10
}

#[derive(Debug, Serialize)]
pub struct Claimed {
    pub now_ms: u64,
    pub messages: Vec<Delivery>,
}

/// One message as a claim delivers it.
#[derive(Debug, Serialize)]
pub struct Delivery {
    pub id: String,
    pub body: String,
    pub priority: i64,
    pub attempts: u32,
    pub receipt: String,
    pub invisible_until_ms: u64,
}

/// The reply of `peek` and `dead`.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub messages: Vec<Listed>,
}

/// One message as `peek` and `dead` show it.
#[derive(Debug, Serialize)]
pub struct Listed {
    pub id: String,
    pub body: String,
    pub priority: i64,
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_fills_in_defaults() {
        let push: Push = parse(br#"{"queue": "q", "body": "hi"}"#).unwrap();
        assert_eq!((push.priority, push.delay_ms, push.max_attempts), (0, 0, 5));
    }

    #[test]
    fn push_needs_an_attempt_and_a_body() {
        assert!(parse::<Push>(br#"{"queue": "q", "body": "hi", "max_attempts": 0}"#).is_err());
        assert!(parse::<Push>(br#"{"queue": "q"}"#).is_err());
        assert!(parse::<Push>(br#"{"queue": "q", "body": "hi", "priority": 1.5}"#).is_err());
    }

    #[test]
    fn claim_fills_in_defaults_and_bounds_max() {
        let claim: Claim = parse(br#"{"queue": "q"}"#).unwrap();
        assert_eq!((claim.visibility_ms, claim.max), (30_000, 1));
        assert!(parse::<Claim>(br#"{"queue": "q", "max": 100}"#).is_ok());
        assert!(parse::<Claim>(br#"{"queue": "q", "max": 101}"#).is_err());
        assert!(parse::<Claim>(br#"{"queue": "q", "max": 0}"#).is_err());
        assert!(parse::<Claim>(br#"{"queue": "q", "visibility_ms": 0}"#).is_err());
    }

    #[test]
    fn lists_default_to_ten() {
        let list: List = parse(br#"{"queue": "q"}"#).unwrap();
        assert_eq!(list.max, 10);
        assert!(parse::<List>(br#"{"queue": "q", "max": 0}"#).is_err());
    }

    #[test]
    fn nack_defaults_to_no_delay() {
        let nack: Nack = parse(br#"{"queue": "q", "receipt": "r"}"#).unwrap();
        assert_eq!(nack.delay_ms, 0);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = parse::<Len>(br#"{"queue": "q", "name": "q"}"#).unwrap_err();
        assert!(error.contains("unknown field"), "{error}");
        assert!(parse::<Ack>(br#"{"queue": "q", "receipt": "r", "delay_ms": 1}"#).is_err());
    }
}
