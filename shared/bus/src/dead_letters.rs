//! The dead-letter queue as an operator handles it: every waiting message taken, unacknowledged,
//! on a channel of its own; each then replayed or dropped (acknowledged) or left alone, and what is
//! left returns to the queue, in its order, when the channel closes.
//!
//! Two kinds wait there: envelopes the workers wrote ([`DeadLetter`], routing key
//! `dead.<reason>`), which keep the original body, its queue and routing key; and messages the
//! broker moved itself after [`crate::BROKER_DELIVERY_LIMIT`] deliveries (`poison.<queue>`),
//! which are the original message with an `x-death` header saying where it came from.

use crate::{Bus, BusError, QueueName, Routed, BROKER_DELIVERY_LIMIT, SENT_AT_HEADER};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Acker;
use lapin::{BasicProperties, Channel};
use oleg_messages::DeadLetter;

/// Header counting how many times an operator replayed a message; a dead letter of a replayed
/// message carries the count in its envelope (`replays`).
pub const REPLAYS_HEADER: &str = "x-oleg-replays";

/// The reason shown for messages the broker dead-lettered after its delivery limit.
pub const POISON_REASON: &str = "poison";

/// One dead letter, held unacknowledged.
pub struct HeldLetter {
    /// The dead letter's message id (its position in the queue when it has none).
    pub id: String,
    pub reason: String,
    pub detail: String,
    /// The queue it was refused from.
    pub queue: String,
    pub attempts: u32,
    pub replays: u32,
    /// When it was refused (Unix milliseconds), where known.
    pub failed_at_ms: Option<i64>,
    /// The original body, as first published.
    pub body: Vec<u8>,
    /// Where a replay publishes it: the original exchange and routing key.
    pub exchange: String,
    pub routing_key: String,
    acker: Acker,
}

impl HeldLetter {
    /// Reads one delivery of the dead-letter queue. A body that is neither an envelope nor a
    /// broker dead letter is still listed (reason `unreadable`), never dropped unseen.
    fn read(
        position: usize,
        routing_key: &str,
        properties: &BasicProperties,
        body: Vec<u8>,
        acker: Acker,
        events_exchange: &str,
    ) -> Self {
        let headers = properties.headers().clone().unwrap_or_default();
        let id = properties
            .message_id()
            .as_ref()
            .map_or_else(|| format!("#{position}"), |id| id.to_string());
        let replays = header_int(&headers, REPLAYS_HEADER).unwrap_or(0) as u32;
        if let Some(queue) = routing_key.strip_prefix("poison.") {
            let death = first_death(&headers);
            let field = |key: &str| death.as_ref().and_then(|d| as_text(d.inner().get(key)?));
            let original_key = death
                .as_ref()
                .and_then(|d| match d.inner().get("routing-keys")? {
                    AMQPValue::FieldArray(keys) => keys.as_slice().first().and_then(as_text),
                    _ => None,
                })
                .unwrap_or_default();
            return Self {
                id,
                reason: POISON_REASON.to_owned(),
                detail: "the broker's delivery limit was reached (the message crashed or stalled its consumers)".to_owned(),
                queue: field("queue").unwrap_or_else(|| queue.to_owned()),
                // The dead-letter queue's own delivery count replaces the original queue's;
                // a message dead-lettered for the delivery limit was delivered that often.
                attempts: if field("reason").as_deref() == Some("delivery_limit") {
                    BROKER_DELIVERY_LIMIT as u32
                } else {
                    0
                },
                replays,
                failed_at_ms: death
                    .as_ref()
                    .and_then(|d| match d.inner().get("time")? {
                        AMQPValue::Timestamp(seconds) => Some(*seconds as i64 * 1000),
                        _ => None,
                    }),
                exchange: field("exchange").unwrap_or_else(|| events_exchange.to_owned()),
                routing_key: original_key,
                body,
                acker,
            };
        }
        match serde_json::from_slice::<DeadLetter>(&body) {
            Ok(letter) => {
                // RPC requests were sent to their queue through the default exchange; events
                // went to the events exchange under their kind's key.
                let exchange = if letter.routing_key == letter.queue {
                    String::new()
                } else {
                    events_exchange.to_owned()
                };
                // A payload that does not decode is shown as the envelope and never replayed:
                // a replay would publish an empty body and then drop the letter.
                let (body, detail, routing_key) = match letter.payload.to_bytes() {
                    Ok(original) => (original, letter.detail, letter.routing_key),
                    Err(error) => (
                        body,
                        format!("{} (its payload does not decode: {error})", letter.detail),
                        String::new(),
                    ),
                };
                Self {
                    id,
                    reason: letter.reason.as_str().to_owned(),
                    detail,
                    queue: letter.queue,
                    attempts: letter.attempts,
                    replays: letter.replays.max(replays),
                    failed_at_ms: Some(letter.failed_at.timestamp_millis()),
                    body,
                    exchange,
                    routing_key,
                    acker,
                }
            }
            Err(error) => Self {
                id,
                reason: "unreadable".to_owned(),
                detail: format!("not a dead-letter envelope: {error}"),
                queue: String::new(),
                attempts: 0,
                replays,
                failed_at_ms: header_int(&headers, SENT_AT_HEADER),
                body,
                exchange: String::new(),
                routing_key: String::new(),
                acker,
            },
        }
    }

    /// Whether a replay knows where to send it.
    pub fn replayable(&self) -> bool {
        !self.routing_key.is_empty()
    }
}

/// Why a letter was not replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("it does not say where it came from")]
    NoOrigin,
    #[error("no queue is bound to {exchange:?} / {routing_key:?} any more")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// The dead letters taken from the queue, held until [`DeadLetterQueue::release`].
pub struct DeadLetterQueue {
    bus: Bus,
    channel: Channel,
    pub letters: Vec<HeldLetter>,
}

impl DeadLetterQueue {
    /// Takes up to `limit` waiting dead letters, oldest first, without acknowledging them.
    pub async fn take(bus: &Bus, limit: usize) -> Result<Self, BusError> {
        let (channel, _) = bus.open_channel(None).await?;
        let queue = bus.topology().queue(QueueName::DeadLetters);
        let events = bus.topology().events_exchange();
        let mut letters = Vec::new();
        while letters.len() < limit {
            let Some(message) = channel
                .basic_get(queue.clone().into(), BasicGetOptions { no_ack: false })
                .await?
            else {
                break;
            };
            let delivery = message.delivery;
            letters.push(HeldLetter::read(
                letters.len() + 1,
                delivery.routing_key.as_str(),
                &delivery.properties,
                delivery.data,
                delivery.acker,
                &events,
            ));
        }
        Ok(Self {
            bus: bus.clone(),
            channel,
            letters,
        })
    }

    /// Publishes the letter's original body to where it first went (confirmed, with the replay
    /// count raised), then removes the dead letter. If it fails again it comes back here with
    /// the higher count; nothing replays it by itself.
    pub async fn replay(&self, letter: &HeldLetter) -> Result<(), ReplayError> {
        if !letter.replayable() {
            return Err(ReplayError::NoOrigin);
        }
        let mut headers = FieldTable::default();
        headers.insert(
            REPLAYS_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(letter.replays) + 1),
        );
        let routed = self
            .bus
            .publish_bytes(
                &letter.exchange,
                &letter.routing_key,
                &letter.body,
                BasicProperties::default().with_headers(headers),
            )
            .await?;
        if routed == Routed::NoQueue {
            return Err(ReplayError::Unroutable {
                exchange: letter.exchange.clone(),
                routing_key: letter.routing_key.clone(),
            });
        }
        self.remove(letter).await?;
        Ok(())
    }

    /// Removes the dead letter for good.
    pub async fn remove(&self, letter: &HeldLetter) -> Result<(), BusError> {
        letter.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Returns every letter not removed to the queue.
    pub async fn release(self) {
        if let Err(error) = self.channel.close(200, "dead letters read".into()).await {
            tracing::debug!(%error, "closing the dead-letter channel");
        }
    }
}

fn first_death(headers: &FieldTable) -> Option<FieldTable> {
    match headers.inner().get("x-death")? {
        AMQPValue::FieldArray(deaths) => match deaths.as_slice().first()? {
            AMQPValue::FieldTable(death) => Some(death.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn as_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// An integer header, whichever integer type the sender chose.
pub(crate) fn header_int(headers: &FieldTable, key: &str) -> Option<i64> {
    match headers.inner().get(key)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}
