//! Demonstrates a validator: admits a request when every value it writes is a JSON object; deletes
//! always pass.

use cairn_plugin_sdk::{Validator, Write};

struct JsonObjects;

impl Validator for JsonObjects {
    fn validate(writes: Vec<Write>) -> Result<(), String> {
        for write in writes {
            let Some(value) = write.value else { continue };
            let key = String::from_utf8_lossy(&write.key);
            match serde_json::from_slice::<serde_json::Value>(&value) {
                Ok(serde_json::Value::Object(_)) => {}
                Ok(_) => return Err(format!("{key}: value is not a JSON object")),
                Err(e) => return Err(format!("{key}: value is not a JSON object: {e}")),
            }
        }
        Ok(())
    }
}

cairn_plugin_sdk::validator!(JsonObjects);
