//! The TOML manifest that accompanies a plugin component on disk: what `cairn plugin deploy
//! --manifest` and `--plugin-dir` read.
//!
//! ```toml
//! version = "1.0.0"            # required by --plugin-dir; the CLI also takes --version
//! prefixes = ["counters/"]     # keys the plugin may read and write ("" grants every key)
//! hooks = ["config/"]          # prefixes whose writes it validates
//! [limits]                     # each optional; defaults as in `cairn plugin deploy --help`
//! fuel = 10000000
//! memory_bytes = 16777216
//! output_bytes = 65536
//! ```

use std::path::Path;

use cairn_proto::cairn_v1 as pb;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub version: Option<String>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub hooks: Vec<String>,
    #[serde(default)]
    pub limits: LimitsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub fuel: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub output_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
}

impl ManifestFile {
    pub fn read(path: &Path) -> Result<ManifestFile, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ManifestFile::parse(&text, path)
    }

    /// Parses `text`, read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<ManifestFile, ManifestError> {
        toml::from_str(text).map_err(|source| ManifestError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    /// The manifest as the wire carries it; limits left out are zero, which the server takes as
    /// its defaults.
    pub fn to_wire(&self) -> pb::Manifest {
        pb::Manifest {
            prefixes: self
                .prefixes
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
            limits: Some(pb::PluginLimits {
                fuel: self.limits.fuel.unwrap_or(0),
                memory_bytes: self.limits.memory_bytes.unwrap_or(0),
                output_bytes: self.limits.output_bytes.unwrap_or(0),
            }),
            hooks: self.hooks.iter().map(|p| p.as_bytes().to_vec()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_with_defaults_and_refuses_unknown_fields() {
        let manifest: ManifestFile =
            toml::from_str("version = \"2\"\nprefixes = [\"a/\"]\n[limits]\nfuel = 5\n").unwrap();
        let wire = manifest.to_wire();
        assert_eq!(manifest.version.as_deref(), Some("2"));
        assert_eq!(wire.prefixes, vec![b"a/".to_vec()]);
        assert_eq!(wire.limits.unwrap().fuel, 5);
        assert_eq!(wire.limits.unwrap().memory_bytes, 0);
        assert!(toml::from_str::<ManifestFile>("prefix = [\"a/\"]").is_err());
    }
}
