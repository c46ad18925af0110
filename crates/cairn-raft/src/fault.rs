//! A fault a test can inject into one member, to see how a member whose state machine fails
//! stops. Nothing sets one but `CAIRN_TEST_FAULT`, which the tests of that path set on one
//! member; a member that runs for real has none.

use cairn_kernel::Command;

/// What applying a put of `key` does on this member instead of applying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyFault {
    /// The state machine panics.
    Panic { key: Vec<u8> },
    /// The state machine fails with a storage error.
    Error { key: Vec<u8> },
}

impl ApplyFault {
    /// Parses `panic:KEY` or `error:KEY`.
    pub fn parse(spec: &str) -> Result<ApplyFault, String> {
        match spec.split_once(':') {
            Some(("panic", key)) if !key.is_empty() => Ok(ApplyFault::Panic {
                key: key.as_bytes().to_vec(),
            }),
            Some(("error", key)) if !key.is_empty() => Ok(ApplyFault::Error {
                key: key.as_bytes().to_vec(),
            }),
            _ => Err(format!(
                "{spec:?}: expected panic:KEY or error:KEY, the fault to inject when this member \
                 applies a put of KEY"
            )),
        }
    }

    /// Strikes if `commands` put this fault's key: panics, or returns the error to fail with.
    pub(crate) fn strike(&self, commands: &[Command]) -> Result<(), String> {
        let (ApplyFault::Panic { key } | ApplyFault::Error { key }) = self;
        let hit = commands
            .iter()
            .any(|command| matches!(command, Command::Put(put) if &put.key == key));
        if !hit {
            return Ok(());
        }
        let key = String::from_utf8_lossy(key);
        match self {
            ApplyFault::Panic { .. } => panic!("injected fault: applying a put of {key:?}"),
            ApplyFault::Error { .. } => Err(format!("injected fault: applying a put of {key:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_parses_from_its_kind_and_key() {
        assert_eq!(
            ApplyFault::parse("panic:boom"),
            Ok(ApplyFault::Panic {
                key: b"boom".to_vec()
            })
        );
        assert_eq!(
            ApplyFault::parse("error:a:b"),
            Ok(ApplyFault::Error {
                key: b"a:b".to_vec()
            })
        );
        assert!(ApplyFault::parse("panic:").is_err());
        assert!(ApplyFault::parse("explode:x").is_err());
    }
}
