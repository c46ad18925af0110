//! How the command line reaches a cluster: etcdctl's `--endpoints`.

use std::time::Duration;

use anyhow::bail;
use tonic::transport::Channel;

/// How long the command line waits for each endpoint to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to the first of the comma-separated `endpoints` that answers; an endpoint
/// without a scheme is taken as `http://`.
pub async fn channel(endpoints: &str) -> anyhow::Result<Channel> {
    let mut last_error = None;
    for endpoint in endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let url = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        match Channel::from_shared(url.clone())?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
        {
            Ok(channel) => return Ok(channel),
            Err(error) => last_error = Some(format!("{url}: {error}")),
        }
    }
    match last_error {
        Some(error) => bail!("no endpoint answered; last: {error}"),
        None => bail!("--endpoints names no endpoint"),
    }
}
