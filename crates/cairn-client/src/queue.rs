//! Durable queues: the bundled queue recipe, with at-least-once delivery.
//!
//! A claimed message is invisible to other consumers for its visibility timeout (on the
//! leader's clock); acked, it is gone; nacked or not acked in time, it is delivered again, until
//! its attempts run out and it moves to the dead letters. Consumers must therefore be ready to
//! see a message twice, and ack only once done with it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plugin_call::{Mode, call};
use crate::{Client, Error};

const PLUGIN: &str = "queue";
/// The longest a [`Consumer`] waits between claims while its queue is empty.
const POLL_MAX: Duration = Duration::from_millis(500);
const POLL_MIN: Duration = Duration::from_millis(10);

/// How a message is pushed.
#[derive(Clone, Copy, Debug)]
pub struct PushOptions {
    /// Higher is delivered first.
    pub priority: i64,
    /// Not delivered before this has passed.
    pub delay: Duration,
    /// Deliveries before it is dead-lettered.
    pub max_attempts: u32,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            priority: 0,
            delay: Duration::ZERO,
            max_attempts: 5,
        }
    }
}

/// A message claimed by this client.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub body: String,
    pub priority: i64,
    /// Deliveries so far, this one included.
    pub attempts: u32,
    /// Identifies this delivery for ack and nack.
    pub receipt: String,
    /// When (leader time, ms since the Unix epoch) the message becomes visible again if not
    /// acked.
    pub invisible_until_ms: u64,
}

/// A message as peek and dead list it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Message {
    pub id: String,
    pub body: String,
    pub priority: i64,
    pub attempts: u32,
}

/// How many messages a queue holds, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Lengths {
    pub ready: u64,
    pub delayed: u64,
    pub claimed: u64,
    pub dead: u64,
}

/// What a nack did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Nacked {
    /// Given back to the queue.
    pub requeued: bool,
    /// Out of attempts: moved to the dead letters.
    pub dead: bool,
}

#[derive(Serialize)]
struct PushInput<'a> {
    queue: &'a str,
    body: &'a str,
    priority: i64,
    delay_ms: u64,
    max_attempts: u32,
}

#[derive(Deserialize)]
struct Pushed {
    id: String,
}

#[derive(Serialize)]
struct ClaimInput<'a> {
    queue: &'a str,
    visibility_ms: u64,
    max: u32,
}

#[derive(Deserialize)]
struct Claimed {
    messages: Vec<Delivery>,
}

#[derive(Serialize)]
struct ReceiptInput<'a> {
    queue: &'a str,
    receipt: &'a str,
}

#[derive(Serialize)]
struct NackInput<'a> {
    queue: &'a str,
    receipt: &'a str,
    delay_ms: u64,
}

#[derive(Deserialize)]
struct Acked {
    acked: bool,
}

#[derive(Serialize)]
struct QueueInput<'a> {
    queue: &'a str,
}

#[derive(Serialize)]
struct ListInput<'a> {
    queue: &'a str,
    max: u32,
}

#[derive(Deserialize)]
struct Messages {
    messages: Vec<Message>,
}

impl Client {
    /// Appends `body` to `queue`; returns the message's ID. Once this returns, the message is
    /// committed on a majority of members.
    pub async fn push(
        &self,
        queue: &str,
        body: &str,
        options: &PushOptions,
    ) -> Result<String, Error> {
        let input = PushInput {
            queue,
            body,
            priority: options.priority,
            delay_ms: millis(options.delay),
            max_attempts: options.max_attempts,
        };
        let pushed: Pushed = call(&self.channel, PLUGIN, "push", &input, Mode::Write).await?;
        Ok(pushed.id)
    }

    /// Claims up to `max` messages of `queue` for `visibility`; fewer (or none) when fewer are
    /// deliverable.
    pub async fn claim(
        &self,
        queue: &str,
        visibility: Duration,
        max: u32,
    ) -> Result<Vec<Delivery>, Error> {
        let input = ClaimInput {
            queue,
            visibility_ms: millis(visibility).max(1),
            max,
        };
        let claimed: Claimed = call(&self.channel, PLUGIN, "claim", &input, Mode::Write).await?;
        Ok(claimed.messages)
    }

    /// Deletes a delivered message; false when the delivery is stale (its visibility passed and
    /// someone else claimed it) or already acked.
    pub async fn ack(&self, queue: &str, receipt: &str) -> Result<bool, Error> {
        let acked: Acked = call(
            &self.channel,
            PLUGIN,
            "ack",
            &ReceiptInput { queue, receipt },
            Mode::Write,
        )
        .await?;
        Ok(acked.acked)
    }

    /// Gives a delivered message back, deliverable again after `delay`.
    pub async fn nack(&self, queue: &str, receipt: &str, delay: Duration) -> Result<Nacked, Error> {
        let input = NackInput {
            queue,
            receipt,
            delay_ms: millis(delay),
        };
        call(&self.channel, PLUGIN, "nack", &input, Mode::Write).await
    }

    /// How many messages `queue` holds, by state.
    pub async fn queue_len(&self, queue: &str) -> Result<Lengths, Error> {
        call(
            &self.channel,
            PLUGIN,
            "len",
            &QueueInput { queue },
            Mode::Read,
        )
        .await
    }

    /// The next `max` messages a claim would deliver, without claiming them.
    pub async fn peek(&self, queue: &str, max: u32) -> Result<Vec<Message>, Error> {
        let messages: Messages = call(
            &self.channel,
            PLUGIN,
            "peek",
            &ListInput { queue, max },
            Mode::Read,
        )
        .await?;
        Ok(messages.messages)
    }

    /// The dead letters of `queue`, oldest first.
    pub async fn dead_letters(&self, queue: &str, max: u32) -> Result<Vec<Message>, Error> {
        let messages: Messages = call(
            &self.channel,
            PLUGIN,
            "dead",
            &ListInput { queue, max },
            Mode::Read,
        )
        .await?;
        Ok(messages.messages)
    }

    /// A consumer of `queue` that claims one message at a time for `visibility`.
    pub fn consumer(&self, queue: &str, visibility: Duration) -> Consumer {
        Consumer {
            client: self.clone(),
            queue: queue.to_string(),
            visibility,
            idle: POLL_MIN,
        }
    }
}

/// Claims messages one at a time, waiting (polling with backoff) while the queue is empty.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    queue: String,
    visibility: Duration,
    idle: Duration,
}

impl Consumer {
    /// The next message, once there is one.
    pub async fn next(&mut self) -> Result<Delivery, Error> {
        loop {
            let mut claimed = self.client.claim(&self.queue, self.visibility, 1).await?;
            if let Some(delivery) = claimed.pop() {
                self.idle = POLL_MIN;
                return Ok(delivery);
            }
            tokio::time::sleep(self.idle).await;
            self.idle = (self.idle * 2).min(POLL_MAX);
        }
    }

    /// Acks a message this consumer claimed.
    pub async fn ack(&self, delivery: &Delivery) -> Result<bool, Error> {
        self.client.ack(&self.queue, &delivery.receipt).await
    }

    /// Nacks a message this consumer claimed.
    pub async fn nack(&self, delivery: &Delivery, delay: Duration) -> Result<Nacked, Error> {
        self.client
            .nack(&self.queue, &delivery.receipt, delay)
            .await
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
