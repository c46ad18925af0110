//! Demonstrates the output limit: `huge` returns 16 MiB, which the host must refuse rather than
//! pass on.

const OUTPUT_BYTES: usize = 16 << 20;

fn huge(_input: &[u8]) -> Result<Vec<u8>, String> {
    Ok(vec![b'x'; OUTPUT_BYTES])
}

cairn_plugin_sdk::recipe! { "huge" => huge }
