//! Locks: the bundled lock recipe through `cairn.v1.Locks`.
//!
//! A lock is held under a [`Session`]'s lease, by whoever joined its line first; the session
//! ending releases it. A [`LockGuard`] carries the fencing token: it grows from each holder to
//! the next, and [`LockGuard::fence`] is the Txn comparison that makes a write go through only
//! while the lock is held.

use std::time::Duration;

use cairn_proto::cairn_v1::locks_client::LocksClient;
use cairn_proto::cairn_v1::{AcquireRequest, OwnerRequest, ReleaseRequest};
use cairn_proto::etcdserverpb::Compare;
use tonic::transport::Channel;

use crate::{Client, Error, Session};

/// A held lock. Release it with [`LockGuard::release`]; dropping it releases it in the
/// background, as well as it can.
#[derive(Debug)]
pub struct LockGuard {
    channel: Channel,
    key: String,
    fencing_token: i64,
    revision: i64,
    released: bool,
}

/// Who holds a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub key: String,
    pub lease: i64,
    pub fencing_token: i64,
}

impl Client {
    /// Waits until holding lock `name` under `session`.
    pub async fn lock(&self, name: &str, session: &Session) -> Result<LockGuard, Error> {
        self.acquire(name, session, false, None)
            .await
            .map(|guard| guard.expect("a waiting acquire ends holding the lock"))
    }

    /// As [`Client::lock`], failing with DEADLINE_EXCEEDED (and leaving the line) after
    /// `timeout`.
    pub async fn lock_with_timeout(
        &self,
        name: &str,
        session: &Session,
        timeout: Duration,
    ) -> Result<LockGuard, Error> {
        self.acquire(name, session, false, Some(timeout))
            .await
            .map(|guard| guard.expect("a waiting acquire ends holding the lock"))
    }

    /// Takes lock `name` if nobody holds it; `None` otherwise.
    pub async fn try_lock(
        &self,
        name: &str,
        session: &Session,
    ) -> Result<Option<LockGuard>, Error> {
        self.acquire(name, session, true, None).await
    }

    /// Who holds lock `name`, if anyone.
    pub async fn lock_owner(&self, name: &str) -> Result<Option<Owner>, Error> {
        let owner = LocksClient::new(self.channel.clone())
            .owner(OwnerRequest {
                name: name.as_bytes().to_vec(),
            })
            .await?
            .into_inner();
        Ok(owner.held.then(|| Owner {
            key: String::from_utf8_lossy(&owner.key).into_owned(),
            lease: owner.lease,
            fencing_token: owner.fencing_token,
        }))
    }

    async fn acquire(
        &self,
        name: &str,
        session: &Session,
        only_if_free: bool,
        timeout: Option<Duration>,
    ) -> Result<Option<LockGuard>, Error> {
        let acquired = LocksClient::new(self.channel.clone())
            .acquire(AcquireRequest {
                name: name.as_bytes().to_vec(),
                lease: session.lease(),
                only_if_free,
                timeout_ms: timeout.map_or(0, |t| t.as_millis().max(1) as u64),
            })
            .await?
            .into_inner();
        Ok(acquired.acquired.then(|| LockGuard {
            channel: self.channel.clone(),
            key: String::from_utf8_lossy(&acquired.key).into_owned(),
            fencing_token: acquired.fencing_token,
            revision: acquired.header.map_or(0, |h| h.revision),
            released: false,
        }))
    }
}

impl LockGuard {
    /// The key that exists while the lock is held.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Grows from each holder of the lock to the next.
    pub fn fencing_token(&self) -> i64 {
        self.fencing_token
    }

    /// The store revision at which the lock was acquired.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The Txn comparison that holds only while this lock is held: put it in a Txn's `compare`
    /// and its `success` ops are applied only then.
    pub fn fence(&self) -> Compare {
        crate::created_at(self.key.as_bytes().to_vec(), self.fencing_token)
    }

    /// Gives the lock up; the next waiter holds it in the same revision.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        release(self.channel.clone(), self.key.clone(), self.fencing_token).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (channel, key, token) = (self.channel.clone(), self.key.clone(), self.fencing_token);
        runtime.spawn(async move {
            if let Err(error) = release(channel, key.clone(), token).await {
                // The session's lease ending releases it instead.
                tracing::debug!(%key, %error, "could not release a dropped lock");
            }
        });
    }
}

async fn release(channel: Channel, key: String, fencing_token: i64) -> Result<(), Error> {
    LocksClient::new(channel)
        .release(ReleaseRequest {
            key: key.into_bytes(),
            fencing_token,
        })
        .await?;
    Ok(())
}
