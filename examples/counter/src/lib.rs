//! Example Cairn recipe plugin: decimal counters. `incr` adds one to the counter at the key given
//! as input and returns the new value; `get` returns the current value. Both read an absent key
//! as 0, and values are decimal ASCII so `etcdctl get` shows them as they are.

use cairn_plugin_sdk::kv;

/// The counter at `key`, 0 when the key does not exist.
fn read(key: &[u8]) -> Result<u64, String> {
    let Some(current) = kv::get(key).map_err(|e| e.to_string())? else {
        return Ok(0);
    };
    let text = std::str::from_utf8(&current.value).map_err(|_| "counter is not UTF-8")?;
    text.parse()
        .map_err(|e| format!("counter {text:?} is not a number: {e}"))
}

fn incr(key: &[u8]) -> Result<Vec<u8>, String> {
    let next = read(key)?.checked_add(1).ok_or("counter overflow")?;
    let value = next.to_string().into_bytes();
    kv::put(key, &value).map_err(|e| e.to_string())?;
    Ok(value)
}

fn get(key: &[u8]) -> Result<Vec<u8>, String> {
    Ok(read(key)?.to_string().into_bytes())
}

cairn_plugin_sdk::recipe! {
    "incr" => incr,
    "get" => get,
}
