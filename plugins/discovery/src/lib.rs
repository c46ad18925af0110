//! Cairn's bundled service discovery: instances of services registered under leases.
//!
//! An instance of service `SERVICE` with ID `ID` is the key `services/SERVICE/ID`, attached to
//! the lease it was registered with, so that it disappears when the lease ends; keeping the lease
//! alive is the registering client's business. The key's value is the instance as JSON, with
//! every field present: `{"service", "id", "address", "port", "tags", "metadata", "health"}`,
//! health being `"passing"`, `"warning"` or `"critical"`. Clients watch `services/SERVICE/` with
//! etcd's Watch API and decode the values themselves, so the stored value is the public format.
//!
//! Functions (JSON in, JSON out):
//! - `register {"service", "id", "address", "port", "tags"?, "metadata"?, "health"?, "lease"}`
//!   stores the instance (tags default to `[]`, metadata to `{}`, health to `"passing"`),
//!   replacing any earlier registration of the same service and ID, and returns `{"key"}`.
//! - `deregister {"service", "id"}` deletes the instance and returns `{"removed"}`.
//! - `set_health {"service", "id", "health"}` sets the instance's health, keeping its lease, and
//!   returns `{"updated"}`, false when there is no such instance.
//! - `list {"service", "tag"?, "health"?}` returns `{"instances"}`, the service's instances in
//!   ID order, only those with the tag and with exactly the health when given. Read-only.
//! - `services {}` returns `{"services"}`, the names of the services with instances, sorted.
//!   Read-only.
//!
//! Keys under `services/` that are not instances (written there by other clients) are ignored.

use std::collections::BTreeMap;

use cairn_plugin_sdk::json::{parse, reply};
use cairn_plugin_sdk::kv;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "services/";
const MAX_TAGS: usize = 64;
const MAX_METADATA: usize = 64;

/// One instance of a service, exactly as stored and as watchers decode it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Instance {
    service: String,
    id: String,
    address: String,
    port: u16,
    #[serde(default)]
    tags: Vec<String>,
    // A BTreeMap serialises its entries in key order, so the stored value is deterministic.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    health: Health,
}

/// How an instance says it is doing; new instances are passing until told otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
enum Health {
    #[default]
    Passing,
    Warning,
    Critical,
}

impl TryFrom<String> for Health {
    type Error = String;

    // By hand rather than derived, so that a bad value is refused naming the field and the
    // values allowed.
    fn try_from(health: String) -> Result<Health, String> {
        match health.as_str() {
            "passing" => Ok(Health::Passing),
            "warning" => Ok(Health::Warning),
            "critical" => Ok(Health::Critical),
            _ => Err(format!(
                "health must be \"passing\", \"warning\" or \"critical\", not {health:?}"
            )),
        }
    }
}

/// An instance's fields and the lease that keeps it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    service: String,
    id: String,
    address: String,
    port: u16,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    health: Health,
    lease: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deregister {
    service: String,
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetHealth {
    service: String,
    id: String,
    health: Health,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct List {
    service: String,
    tag: Option<String>,
    health: Option<Health>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Services {}

fn register(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Register = parse(input)?;
    let lease = request.lease;
    let instance = checked_instance(request)?;
    let key = instance_key(&instance.service, &instance.id);
    kv::put_with_lease(key.as_bytes(), &encode(&instance)?, lease).map_err(|e| e.to_string())?;
    reply(&serde_json::json!({ "key": key }))
}

fn deregister(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: Deregister = parse(input)?;
    check_name("service", &request.service)?;
    check_name("id", &request.id)?;
    let key = instance_key(&request.service, &request.id);
    let removed = kv::delete(key.as_bytes()).map_err(|e| e.to_string())?;
    reply(&serde_json::json!({ "removed": removed }))
}

fn set_health(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: SetHealth = parse(input)?;
    check_name("service", &request.service)?;
    check_name("id", &request.id)?;
    let key = instance_key(&request.service, &request.id);
    let Some(stored) = kv::get(key.as_bytes()).map_err(|e| e.to_string())? else {
        return reply(&serde_json::json!({ "updated": false }));
    };
    let Some(mut instance) = decode_instance(&stored.key, &stored.value) else {
        return reply(&serde_json::json!({ "updated": false }));
    };
    // Rewriting an unchanged record would only wake every watcher of the service for nothing.
    if instance.health != request.health {
        instance.health = request.health;
        kv::put_with_lease(&stored.key, &encode(&instance)?, stored.lease)
            .map_err(|e| e.to_string())?;
    }
    reply(&serde_json::json!({ "updated": true }))
}

fn list(input: &[u8]) -> Result<Vec<u8>, String> {
    let request: List = parse(input)?;
    check_name("service", &request.service)?;
    let prefix = service_prefix(&request.service);
    let kvs = kv::scan_prefix(prefix.as_bytes()).map_err(|e| e.to_string())?;
    let instances: Vec<Instance> = kvs
        .iter()
        .filter_map(|kv| decode_instance(&kv.key, &kv.value))
        .filter(|instance| request.admits(instance))
        .collect();
    reply(&serde_json::json!({ "instances": instances }))
}

fn services(input: &[u8]) -> Result<Vec<u8>, String> {
    // `cairn plugin call discovery services` sends no input at all; take it as `{}`.
    if !input.is_empty() {
        let _: Services = parse(input)?;
    }
    let end = kv::prefix_end(PREFIX.as_bytes());
    let mut start = PREFIX.as_bytes().to_vec();
    let mut names = Vec::new();
    // One key per step, skipping the rest of a service once one of its instances is found, so
    // the cost grows with the number of services rather than of instances.
    loop {
        let page = kv::range(&start, &end, 1).map_err(|e| e.to_string())?;
        let Some(first) = page.kvs.first() else {
            break;
        };
        let (service, next) = step_past(&first.key, &first.value);
        names.extend(service);
        start = next;
    }
    reply(&serde_json::json!({ "services": names }))
}

impl List {
    /// Whether `instance` passes the request's filters.
    fn admits(&self, instance: &Instance) -> bool {
        self.tag
            .as_ref()
            .is_none_or(|tag| instance.tags.contains(tag))
            && self.health.is_none_or(|health| instance.health == health)
    }
}

/// The instance a registration describes, once its fields are within bounds.
fn checked_instance(request: Register) -> Result<Instance, String> {
    if request.lease <= 0 {
        return Err(
            "an instance is registered under a lease: give the ID of a granted lease".into(),
        );
    }
    check_name("service", &request.service)?;
    check_name("id", &request.id)?;
    if request.address.is_empty() {
        return Err("address must not be empty".into());
    }
    if request.port == 0 {
        return Err("port must be between 1 and 65535".into());
    }
    if request.tags.len() > MAX_TAGS {
        return Err(format!(
            "at most {MAX_TAGS} tags, not {}",
            request.tags.len()
        ));
    }
    if request.tags.iter().any(String::is_empty) {
        return Err("tags must not be empty".into());
    }
    if request.metadata.len() > MAX_METADATA {
        return Err(format!(
            "at most {MAX_METADATA} metadata entries, not {}",
            request.metadata.len()
        ));
    }
    Ok(Instance {
        service: request.service,
        id: request.id,
        address: request.address,
        port: request.port,
        tags: request.tags,
        metadata: request.metadata,
        health: request.health,
    })
}

/// Refuses a service name or instance ID that would not be exactly one key segment.
fn check_name(field: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if name.contains('/') {
        return Err(format!("{field} must not contain '/': {name:?}"));
    }
    Ok(())
}

fn service_prefix(service: &str) -> String {
    format!("{PREFIX}{service}/")
}

fn instance_key(service: &str, id: &str) -> String {
    format!("{PREFIX}{service}/{id}")
}

/// The service of the instance stored at `key`, if it is one, and the key to look at next:
/// past the service's other instances when it is one, else just past `key`.
fn step_past(key: &[u8], value: &[u8]) -> (Option<String>, Vec<u8>) {
    match decode_instance(key, value) {
        Some(instance) => {
            let next = kv::prefix_end(service_prefix(&instance.service).as_bytes());
            (Some(instance.service), next)
        }
        None => (None, [key, &[0]].concat()),
    }
}

/// The instance stored at `key`, or `None` when the value is not an instance registered there.
fn decode_instance(key: &[u8], value: &[u8]) -> Option<Instance> {
    let instance: Instance = serde_json::from_slice(value).ok()?;
    let registered_here = check_name("service", &instance.service).is_ok()
        && check_name("id", &instance.id).is_ok()
        && instance_key(&instance.service, &instance.id).as_bytes() == key;
    registered_here.then_some(instance)
}

fn encode(instance: &Instance) -> Result<Vec<u8>, String> {
    serde_json::to_vec(instance).map_err(|e| e.to_string())
}

cairn_plugin_sdk::recipe! {
    "register" => register,
    "deregister" => deregister,
    "set_health" => set_health,
    "list" => list,
    "services" => services,
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB_1: &str =
        r#"{"service":"web","id":"web-1","address":"10.0.0.1","port":8080,"lease":7}"#;

    fn registration(json: &str) -> Result<Instance, String> {
        checked_instance(parse(json.as_bytes())?)
    }

    fn web_1() -> Instance {
        registration(WEB_1).unwrap()
    }

    #[test]
    fn registration_fills_in_defaults() {
        let instance = web_1();
        assert_eq!(instance.tags, Vec::<String>::new());
        assert_eq!(instance.metadata, BTreeMap::new());
        assert_eq!(instance.health, Health::Passing);
    }

    #[test]
    fn stored_value_has_every_field_in_a_fixed_order() {
        let mut instance = web_1();
        instance.tags = vec!["http".into()];
        instance.metadata = [("zone", "b"), ("arch", "arm")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        instance.health = Health::Warning;
        assert_eq!(
            String::from_utf8(encode(&instance).unwrap()).unwrap(),
            r#"{"service":"web","id":"web-1","address":"10.0.0.1","port":8080,"tags":["http"],"metadata":{"arch":"arm","zone":"b"},"health":"warning"}"#
        );
    }

    #[test]
    fn stored_value_decodes_only_at_its_own_key() {
        let value = encode(&web_1()).unwrap();
        assert_eq!(
            decode_instance(b"services/web/web-1", &value),
            Some(web_1())
        );
        assert_eq!(decode_instance(b"services/web/web-2", &value), None);
        assert_eq!(decode_instance(b"services/web/web-1", b"not json"), None);
        let mut nested = web_1();
        nested.id = "web-1/extra".into();
        let value = encode(&nested).unwrap();
        assert_eq!(decode_instance(b"services/web/web-1/extra", &value), None);
    }

    #[test]
    fn registration_is_checked() {
        let cases = [
            (r#""lease":0"#, "under a lease"),
            (r#""service":"""#, "service must not be empty"),
            (r#""service":"a/b""#, "service must not contain '/'"),
            (r#""id":"""#, "id must not be empty"),
            (r#""id":"x/y""#, "id must not contain '/'"),
            (r#""address":"""#, "address must not be empty"),
            (r#""port":0"#, "port must be between 1 and 65535"),
            (r#""tags":["a",""]"#, "tags must not be empty"),
        ];
        for (field, error) in cases {
            let json = with_field(field);
            let refused = registration(&json).unwrap_err();
            assert!(refused.contains(error), "{json}: {refused}");
        }
    }

    #[test]
    fn registration_bounds_tags_and_metadata() {
        let tags: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        let json = with_field(&format!(r#""tags":{}"#, serde_json::json!(tags)));
        assert!(registration(&json).unwrap_err().contains("at most 64 tags"));
        let json = with_field(&format!(r#""tags":{}"#, serde_json::json!(tags[1..])));
        assert!(registration(&json).is_ok());

        let metadata: BTreeMap<String, String> = (0..=MAX_METADATA)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        let json = with_field(&format!(r#""metadata":{}"#, serde_json::json!(metadata)));
        assert!(
            registration(&json)
                .unwrap_err()
                .contains("at most 64 metadata")
        );
    }

    #[test]
    fn input_is_refused_when_malformed() {
        let unknown = registration(&with_field(r#""weight":3"#)).unwrap_err();
        assert!(unknown.contains("unknown field `weight`"), "{unknown}");
        let missing = parse::<Register>(br#"{"service":"web","id":"web-1","port":1}"#);
        assert!(missing.is_err());
        let too_big = registration(&with_field(r#""port":65536"#)).unwrap_err();
        assert!(too_big.starts_with("bad input:"), "{too_big}");
    }

    #[test]
    fn bad_health_is_refused_naming_the_allowed_values() {
        let refused = parse::<SetHealth>(br#"{"service":"web","id":"web-1","health":"ok"}"#)
            .err()
            .unwrap();
        assert!(
            refused.contains(r#"health must be "passing", "warning" or "critical", not "ok""#),
            "{refused}"
        );
        assert!(parse::<List>(br#"{"service":"web","health":"up"}"#).is_err());
    }

    #[test]
    fn list_filters_by_tag_and_health() {
        let mut instance = web_1();
        instance.tags = vec!["http".into(), "canary".into()];
        instance.health = Health::Critical;
        let admits = |json: &str| parse::<List>(json.as_bytes()).unwrap().admits(&instance);
        assert!(admits(r#"{"service":"web"}"#));
        assert!(admits(r#"{"service":"web","tag":"canary"}"#));
        assert!(!admits(r#"{"service":"web","tag":"grpc"}"#));
        assert!(admits(r#"{"service":"web","health":"critical"}"#));
        assert!(!admits(r#"{"service":"web","health":"passing"}"#));
        assert!(!admits(
            r#"{"service":"web","tag":"http","health":"warning"}"#
        ));
    }

    #[test]
    fn keys_are_services_service_id() {
        assert_eq!(instance_key("web", "web-1"), "services/web/web-1");
        assert_eq!(service_prefix("web"), "services/web/");
    }

    #[test]
    fn services_step_past_a_whole_service_or_a_single_stray_key() {
        let value = encode(&web_1()).unwrap();
        assert_eq!(
            step_past(b"services/web/web-1", &value),
            (Some("web".to_owned()), b"services/web0".to_vec())
        );
        assert_eq!(
            step_past(b"services/web/junk", b"junk"),
            (None, b"services/web/junk\0".to_vec())
        );
        assert_eq!(
            step_past(b"services/web", &value),
            (None, b"services/web\0".to_vec())
        );
    }

    /// WEB_1 with `field` (`"name":value`) added or replaced.
    fn with_field(field: &str) -> String {
        let mut json: serde_json::Value = serde_json::from_str(WEB_1).unwrap();
        let field: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&format!("{{{field}}}")).unwrap();
        json.as_object_mut().unwrap().extend(field);
        json.to_string()
    }
}
