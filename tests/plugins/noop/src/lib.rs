//! The cheapest call there is: `noop` reads nothing, writes nothing and returns nothing, so
//! timing it times only what every call costs (its log entry, the instantiation, the call).

fn noop(_input: &[u8]) -> Result<Vec<u8>, String> {
    Ok(Vec::new())
}

cairn_plugin_sdk::recipe! { "noop" => noop }
