//! `cairn-plugin-build OUT_DIR PACKAGE...`: builds each plugin package of the workspace around the
//! current directory into the component `OUT_DIR/PACKAGE.wasm` (the package name as cargo spells
//! it, dashes included). A PACKAGE may also be given as the path of its crate directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cairn_plugin_build::{Builder, package_name, workspace_root};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(out_dir), packages) = (args.next(), args.collect::<Vec<_>>()) else {
        eprintln!("usage: cairn-plugin-build OUT_DIR PACKAGE...");
        return ExitCode::from(2);
    };
    if packages.is_empty() {
        eprintln!("usage: cairn-plugin-build OUT_DIR PACKAGE...");
        return ExitCode::from(2);
    }
    match run(Path::new(&out_dir), &packages) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cairn-plugin-build: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(out_dir: &Path, packages: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let builder = Builder::new(workspace_root(&std::env::current_dir()?)?);
    std::fs::create_dir_all(out_dir)?;
    for argument in packages {
        let package = package_name(argument)?;
        let component = builder.build(&package)?;
        let path = out_dir.join(format!("{package}.wasm"));
        // Written aside and renamed so a reader never sees half a component.
        let partial = PathBuf::from(format!("{}.partial", path.display()));
        std::fs::write(&partial, &component)?;
        std::fs::rename(&partial, &path)?;
        eprintln!(
            "cairn-plugin-build: {} ({} bytes)",
            path.display(),
            component.len()
        );
    }
    Ok(())
}
