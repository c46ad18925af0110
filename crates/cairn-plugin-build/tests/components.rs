//! Builds plugins of this workspace and checks the components' imports and exports: a plugin
//! imports only the `cairn:plugin` interfaces it calls and exports only what it implements.

use std::path::Path;

use cairn_plugin_build::Builder;
use wasmparser::{Parser, Payload};

/// A builder for this workspace, building in cargo's target directory (`$CARGO_TARGET_DIR`, which
/// `make` sets) so that what `make plugins` built is reused; cargo releases its lock on the
/// directory before it runs tests.
fn builder() -> Builder {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Builder::new(workspace.canonicalize().unwrap())
}

/// The names a component imports and exports, outermost component only.
#[derive(Debug, Default, PartialEq)]
struct Surface {
    imports: Vec<String>,
    exports: Vec<String>,
}

fn surface(component: &[u8]) -> Surface {
    let mut surface = Surface::default();
    // parse_all also walks nested modules and components; only depth 1 is the outer component.
    let mut depth = 0;
    for payload in Parser::new(0).parse_all(component) {
        match payload.unwrap() {
            Payload::Version { encoding, .. } => {
                assert!(depth > 0 || encoding == wasmparser::Encoding::Component);
                depth += 1;
            }
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(imports) if depth == 1 => {
                for import in imports {
                    surface.imports.push(import.unwrap().name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(exports) if depth == 1 => {
                for export in exports {
                    surface.exports.push(export.unwrap().name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    surface
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn counter_imports_kv_and_exports_recipe() {
    let component = builder().build("counter").unwrap();
    assert_eq!(
        surface(&component),
        Surface {
            imports: names(&["cairn:plugin/kv@0.1.0"]),
            exports: names(&["cairn:plugin/recipe@0.1.0"]),
        }
    );
}

#[test]
fn json_validator_exports_only_validator() {
    let component = builder().build("json-validator").unwrap();
    assert_eq!(
        surface(&component),
        Surface {
            imports: Vec::new(),
            exports: names(&["cairn:plugin/validator@0.1.0"]),
        }
    );
}

#[test]
fn hostile_wasi_keeps_its_wasi_import() {
    let component = builder().build("hostile-wasi").unwrap();
    assert_eq!(
        surface(&component).imports,
        names(&["wasi:random/random@0.2.0"])
    );
}
