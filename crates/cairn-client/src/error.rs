/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No endpoint could be reached, or one was malformed.
    #[error("cannot connect: {0}")]
    Endpoint(String),
    /// The server refused or failed the request; its code and message.
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
    /// A recipe plugin answered in a form this client does not know: another version of it is
    /// deployed.
    #[error("unexpected answer from plugin {plugin:?}: {reason}")]
    Protocol {
        plugin: &'static str,
        reason: String,
    },
    /// The session's lease ended (expired or revoked) or its keep-alive stream broke.
    #[error("the session ended: {0}")]
    SessionEnded(String),
}

impl Error {
    /// The gRPC code, when the server answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}
