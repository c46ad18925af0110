//! Cairn's bundled schema validator: keeps the values under a prefix to a JSON Schema.
//!
//! The schema for the keys under `P` is the value of the key `schemas/P` (`schemas/config/`
//! governs `config/db`; `schemas/` governs every key), and `cairn plugin bind schema P` makes
//! the plugin check writes under `P`. A written value is checked against the schema at
//! `schemas/P` for the longest `P` that its key starts with; with none, or for a delete, the
//! write passes. Otherwise the value must be JSON that satisfies the schema, or the whole request
//! is rejected with `<key>: <where>: <what>`, `<where>` being a JSON pointer into the value (`/`
//! for the value itself), e.g. `config/db: /port: 70000 is above the maximum 65535`. The
//! violation reported is the first in document order, taking an object's members in sorted-key
//! order (the order serde_json keeps them in, the same on every replica).
//!
//! Writes are checked against the schemas stored when the request arrives: a request that
//! changes a schema and writes a key it governs has that write checked against the old schema.
//!
//! Keys under `schemas/` are schemas, whatever binding brings them to the plugin: bound to
//! `schemas/`, it checks each schema as it is written. A schema must be `true` (anything goes),
//! `false` (nothing does) or an object using only the keywords below, with well-formed
//! arguments; anything else is rejected with a pointer into the schema, and so is a keyword the
//! plugin does not know, so that a typo cannot silently admit every value:
//! `schemas/config/: /properties/port: unsupported keyword "minimun"`. A schema stored before
//! the plugin was bound to `schemas/` may still be malformed; the writes it governs are then
//! rejected with `<key>: schemas/P is not a valid schema: <where>: <what>`.
//!
//! Supported keywords, with draft 2020-12's meaning, are all the plugin knows:
//! - `type`: one of `"null"`, `"boolean"`, `"object"`, `"array"`, `"number"`, `"integer"`,
//!   `"string"`, or a non-empty array of them; an integer is a number with no fractional part
//!   (`1.0` is one).
//! - `enum` (an array of allowed values) and `const` (the one allowed value). Values are compared
//!   as JSON, numbers by value: `1` equals `1.0`.
//! - `properties` (a schema per member name), `required` (names that must be present),
//!   `additionalProperties` (`false`, or a schema for the members `properties` does not name),
//!   `minProperties`, `maxProperties`.
//! - `items` (a schema every element must satisfy), `minItems`, `maxItems`, `uniqueItems` (no two
//!   elements equal as `enum` compares them).
//! - `minLength`, `maxLength`, counted in Unicode scalar values.
//! - `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, each a number.
//! - `allOf`, `anyOf`, `oneOf` (each a non-empty array of schemas) and `not` (a schema).
//! - Annotations, accepted and ignored: `$schema`, `$id`, `title`, `description`, `default`,
//!   `examples`, `$comment`, and `format`, which is not enforced.
//!
//! Everything else is rejected as an unsupported keyword, notably `pattern`,
//! `patternProperties`, `$ref`, `$defs`, `if`/`then`/`else` and `dependentRequired`. Size bounds
//! are non-negative integers. As in JSON Schema, a keyword about one type (`minimum`,
//! `minLength`, `required`, `items`, ...) lets values of other types pass; `type` restricts them.
//!
//! Functions (JSON in, JSON out), so a schema can be tried without writing anything:
//! - `check {"schema", "value"}` returns `{"valid", "reason"}`: whether `value` satisfies
//!   `schema`, and if not why (`<where>: <what>`, or `the schema is not valid: <where>: <what>`
//!   for a malformed schema); `reason` is empty when `valid`.

mod json_schema;

use std::collections::BTreeMap;

use cairn_plugin_sdk::{Validator, Write, kv};
use json_schema::Schema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where schemas live: the schema for the keys under `P` is the value of `schemas/P`.
const SCHEMAS: &[u8] = b"schemas/";

struct SchemaValidator;

impl Validator for SchemaValidator {
    fn validate(writes: Vec<Write>) -> Result<(), String> {
        let mut stored = None;
        for write in writes {
            let Some(value) = write.value else { continue };
            let checked = if write.key.starts_with(SCHEMAS) {
                parse_schema(&value).map(drop)
            } else {
                // Read on the first write that needs them: a request writing only schemas never
                // does.
                let schemas = match &mut stored {
                    Some(schemas) => schemas,
                    None => stored.insert(StoredSchemas::read()?),
                };
                schemas.check(&write.key, &value)
            };
            checked
                .map_err(|reason| format!("{}: {reason}", String::from_utf8_lossy(&write.key)))?;
        }
        Ok(())
    }
}

/// The schemas stored when the request arrived, read once per validate call; each is parsed
/// and checked the first time a write needs it.
struct StoredSchemas {
    sources: BTreeMap<Vec<u8>, Vec<u8>>,
    parsed: BTreeMap<Vec<u8>, Result<Schema, String>>,
}

impl StoredSchemas {
    fn read() -> Result<StoredSchemas, String> {
        let sources = kv::scan_prefix(SCHEMAS)
            .map_err(|e| format!("reading the schemas: {e}"))?
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        Ok(StoredSchemas {
            sources,
            parsed: BTreeMap::new(),
        })
    }

    /// Checks `value`, written at `key`, against the schema governing `key`, if any.
    fn check(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let Some((schema_key, source)) = governing_schema(&self.sources, key) else {
            return Ok(());
        };
        let schema = self
            .parsed
            .entry(schema_key.clone())
            .or_insert_with(|| {
                parse_schema(source).map_err(|reason| {
                    let schema_key = String::from_utf8_lossy(schema_key);
                    format!("{schema_key} is not a valid schema: {reason}")
                })
            })
            .as_ref()
            .map_err(String::clone)?;
        schema
            .check(&parse_json(value)?)
            .map_err(|violation| violation.to_string())
    }
}

/// The schema governing `key` among `schemas` (keyed by schema key): `schemas/P` for the longest
/// `P` that `key` starts with. Probes each prefix of `key` from the longest, so the cost follows
/// the key's length, not the number of schemas.
fn governing_schema<'a, S>(
    schemas: &'a BTreeMap<Vec<u8>, S>,
    key: &[u8],
) -> Option<(&'a Vec<u8>, &'a S)> {
    let longest = [SCHEMAS, key].concat();
    (SCHEMAS.len()..=longest.len())
        .rev()
        .find_map(|end| schemas.get_key_value(&longest[..end]))
}

fn parse_schema(source: &[u8]) -> Result<Schema, String> {
    Schema::new(&parse_json(source)?).map_err(|violation| violation.to_string())
}

fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("/: not JSON: {e}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Trial {
    schema: Value,
    value: Value,
}

#[derive(Serialize)]
struct Verdict {
    valid: bool,
    reason: String,
}

fn check(input: &[u8]) -> Result<Vec<u8>, String> {
    let trial: Trial = serde_json::from_slice(input).map_err(|e| format!("bad input: {e}"))?;
    let verdict = match judge(&trial) {
        Ok(()) => Verdict {
            valid: true,
            reason: String::new(),
        },
        Err(reason) => Verdict {
            valid: false,
            reason,
        },
    };
    serde_json::to_vec(&verdict).map_err(|e| e.to_string())
}

/// What a write of `trial.value` under `trial.schema` would meet, short of the key.
fn judge(trial: &Trial) -> Result<(), String> {
    let schema = Schema::new(&trial.schema)
        .map_err(|violation| format!("the schema is not valid: {violation}"))?;
    schema
        .check(&trial.value)
        .map_err(|violation| violation.to_string())
}

cairn_plugin_sdk::validator!(SchemaValidator);

cairn_plugin_sdk::recipe! {
    "check" => check,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_keys(keys: &[&str]) -> BTreeMap<Vec<u8>, ()> {
        keys.iter()
            .map(|key| (key.as_bytes().to_vec(), ()))
            .collect()
    }

    fn governing(schemas: &BTreeMap<Vec<u8>, ()>, key: &str) -> Option<String> {
        governing_schema(schemas, key.as_bytes())
            .map(|(schema_key, ())| String::from_utf8(schema_key.clone()).unwrap())
    }

    #[test]
    fn the_longest_prefix_governs() {
        let schemas = schema_keys(&[
            "schemas/",
            "schemas/config/",
            "schemas/config/db",
            "schemas/con",
        ]);
        assert_eq!(
            governing(&schemas, "config/db").as_deref(),
            Some("schemas/config/db")
        );
        assert_eq!(
            governing(&schemas, "config/dbx").as_deref(),
            Some("schemas/config/db")
        );
        assert_eq!(
            governing(&schemas, "config/web").as_deref(),
            Some("schemas/config/")
        );
        assert_eq!(
            governing(&schemas, "config").as_deref(),
            Some("schemas/con")
        );
        assert_eq!(governing(&schemas, "other").as_deref(), Some("schemas/"));
        assert_eq!(governing(&schemas, "").as_deref(), Some("schemas/"));
    }

    #[test]
    fn no_schema_governs_without_a_prefix_of_the_key() {
        let schemas = schema_keys(&["schemas/config/", "schemas/users/a"]);
        assert_eq!(governing(&schemas, "config"), None);
        assert_eq!(governing(&schemas, "users/"), None);
        assert_eq!(governing(&schema_keys(&[]), "config/db"), None);
    }

    #[test]
    fn malformed_schemas_and_values_say_why() {
        let reason = |source: &str| parse_schema(source.as_bytes()).err();
        assert_eq!(reason(r#"{"type":"object"}"#), None);
        assert_eq!(reason("false"), None);
        assert_eq!(
            reason(r#"{"properties":{"port":{"minimun":1}}}"#).as_deref(),
            Some(r#"/properties/port: unsupported keyword "minimun""#)
        );
        assert_eq!(
            reason("{").as_deref(),
            Some("/: not JSON: EOF while parsing an object at line 1 column 1")
        );
    }

    #[test]
    fn check_reports_a_verdict() {
        let verdict = |input: &str| String::from_utf8(check(input.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            verdict(
                r#"{"schema": {"type": "object", "required": ["port"]}, "value": {"port": 1}}"#
            ),
            r#"{"valid":true,"reason":""}"#
        );
        assert_eq!(
            verdict(
                r#"{"schema": {"properties": {"port": {"maximum": 65535}}}, "value": {"port": 70000}}"#
            ),
            r#"{"valid":false,"reason":"/port: 70000 is above the maximum 65535"}"#
        );
        assert_eq!(
            verdict(r#"{"schema": {"minimun": 1}, "value": 0}"#),
            r#"{"valid":false,"reason":"the schema is not valid: /: unsupported keyword \"minimun\""}"#
        );
        assert_eq!(
            verdict(r#"{"schema": true, "value": null}"#),
            r#"{"valid":true,"reason":""}"#
        );
    }

    #[test]
    fn check_refuses_bad_input() {
        assert_eq!(
            check(br#"{"schema": true}"#).unwrap_err(),
            "bad input: missing field `value` at line 1 column 16"
        );
        assert!(check(br#"{"schema": true, "value": 1, "extra": 2}"#).is_err());
    }
}
