//! Service discovery: the bundled discovery recipe.
//!
//! An instance is registered under a lease of its own, which its [`Registration`] keeps alive:
//! when the process dies, the instance disappears within the TTL. Instances are stored as JSON
//! at `services/<service>/<id>`, so [`Client::watch_service`] watches them with etcd's Watch.

use std::collections::BTreeMap;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_proto::mvccpb::event::EventType;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

use crate::plugin_call::{Mode, call};
use crate::{Client, Error, Session};

const PLUGIN: &str = "discovery";
/// Changes a watch buffers for a slow reader.
const CHANGES_BUFFERED: usize = 64;

/// One instance of a service, as the discovery plugin stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub service: String,
    pub id: String,
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub health: Health,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Passing,
    Warning,
    Critical,
}

impl Health {
    /// As the plugin stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

/// Which instances [`Client::instances`] lists.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Filter {
    /// Only instances with this tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Only instances in this health.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// A change to a service's instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Registered, or registered again with new details.
    Up(Instance),
    /// Deregistered, or its lease ended.
    Down { id: String },
}

/// A registered instance, kept alive until dropped (then it goes within its TTL) or
/// deregistered (then it goes at once).
#[derive(Debug)]
pub struct Registration {
    client: Client,
    instance: Instance,
    session: Session,
}

#[derive(Serialize)]
struct RegisterInput<'a> {
    #[serde(flatten)]
    instance: &'a Instance,
    lease: i64,
}

#[derive(Deserialize)]
struct Registered {}

#[derive(Serialize)]
struct InstanceName<'a> {
    service: &'a str,
    id: &'a str,
}

#[derive(Serialize)]
struct SetHealth<'a> {
    service: &'a str,
    id: &'a str,
    health: Health,
}

#[derive(Serialize)]
struct ListInput<'a> {
    service: &'a str,
    #[serde(flatten)]
    filter: &'a Filter,
}

#[derive(Deserialize)]
struct Listed {
    instances: Vec<Instance>,
}

#[derive(Deserialize)]
struct Services {
    services: Vec<String>,
}

#[derive(Deserialize)]
struct Removed {
    removed: bool,
}

#[derive(Deserialize)]
struct Updated {
    updated: bool,
}

impl Client {
    /// Registers `instance` under a new lease of `ttl` seconds, kept alive by the returned
    /// registration.
    pub async fn register(&self, instance: Instance, ttl: i64) -> Result<Registration, Error> {
        let session = self.session(ttl).await?;
        let input = RegisterInput {
            instance: &instance,
            lease: session.lease(),
        };
        let _: Registered = call(&self.channel, PLUGIN, "register", &input, Mode::Write).await?;
        Ok(Registration {
            client: self.clone(),
            instance,
            session,
        })
    }

    /// The instances of `service` that pass `filter`, in id order.
    pub async fn instances(&self, service: &str, filter: &Filter) -> Result<Vec<Instance>, Error> {
        let input = ListInput { service, filter };
        let listed: Listed = call(&self.channel, PLUGIN, "list", &input, Mode::Read).await?;
        Ok(listed.instances)
    }

    /// The services with at least one instance, sorted.
    pub async fn services(&self) -> Result<Vec<String>, Error> {
        let services: Services = call(
            &self.channel,
            PLUGIN,
            "services",
            &serde_json::json!({}),
            Mode::Read,
        )
        .await?;
        Ok(services.services)
    }

    /// Removes an instance, whoever registered it; whether there was one.
    pub async fn deregister(&self, service: &str, id: &str) -> Result<bool, Error> {
        let input = InstanceName { service, id };
        let removed: Removed =
            call(&self.channel, PLUGIN, "deregister", &input, Mode::Write).await?;
        Ok(removed.removed)
    }

    /// The instances of `service` now, and every change after, in order.
    pub async fn watch_service(
        &self,
        service: &str,
    ) -> Result<
        (
            Vec<Instance>,
            impl Stream<Item = Result<Change, Error>> + use<>,
        ),
        Error,
    > {
        let prefix = format!("services/{service}/").into_bytes();
        let range_end = prefix_end(&prefix);
        let current = KvClient::new(self.channel.clone())
            .range(RangeRequest {
                key: prefix.clone(),
                range_end: range_end.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let revision = current.header.map_or(0, |h| h.revision);
        let instances = current
            .kvs
            .iter()
            .map(|kv| decode(&kv.value))
            .collect::<Result<Vec<_>, _>>()?;
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.clone(),
                range_end,
                start_revision: revision + 1,
                ..Default::default()
            })),
        };
        // The request side stays open: closing it would ask the server to end the watch.
        let requests = tokio_stream::once(create).chain(tokio_stream::pending());
        let responses = WatchClient::new(self.channel.clone())
            .watch(requests)
            .await?
            .into_inner();
        let (out, changes) = mpsc::channel(CHANGES_BUFFERED);
        tokio::spawn(forward_changes(responses, prefix.len(), out));
        Ok((instances, ReceiverStream::new(changes)))
    }
}

impl Registration {
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Changes the instance's health, keeping it registered.
    pub async fn set_health(&mut self, health: Health) -> Result<(), Error> {
        let input = SetHealth {
            service: &self.instance.service,
            id: &self.instance.id,
            health,
        };
        let updated: Updated = call(
            &self.client.channel,
            PLUGIN,
            "set_health",
            &input,
            Mode::Write,
        )
        .await?;
        if !updated.updated {
            return Err(Error::SessionEnded(
                "the instance is no longer registered".to_string(),
            ));
        }
        self.instance.health = health;
        Ok(())
    }

    /// Waits until the registration's lease ends on its own (it could not be kept alive).
    pub async fn lost(&self) -> Error {
        self.session.ended().await
    }

    /// Removes the instance now and ends its lease.
    pub async fn deregister(self) -> Result<(), Error> {
        self.client
            .deregister(&self.instance.service, &self.instance.id)
            .await?;
        self.session.close().await
    }
}

/// Turns watch responses into changes until the watch ends or the receiver goes.
async fn forward_changes(
    mut responses: tonic::Streaming<WatchResponse>,
    prefix_len: usize,
    out: mpsc::Sender<Result<Change, Error>>,
) {
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return,
            Err(status) => {
                let _ = out.send(Err(status.into())).await;
                return;
            }
        };
        if response.canceled {
            let reason = format!("the watch was cancelled: {}", response.cancel_reason);
            let _ = out.send(Err(tonic::Status::aborted(reason).into())).await;
            return;
        }
        for event in response.events {
            let kv = event.kv.unwrap_or_default();
            let change = if event.r#type == EventType::Delete as i32 {
                Ok(Change::Down {
                    id: String::from_utf8_lossy(&kv.key[prefix_len..]).into_owned(),
                })
            } else {
                decode(&kv.value).map(Change::Up)
            };
            if out.send(change).await.is_err() {
                return;
            }
        }
    }
}

fn decode(value: &[u8]) -> Result<Instance, Error> {
    serde_json::from_slice(value).map_err(|error| Error::Protocol {
        plugin: PLUGIN,
        reason: format!("an instance record does not decode: {error}"),
    })
}

/// The end of etcd's range of every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
