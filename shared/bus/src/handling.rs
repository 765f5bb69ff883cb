//! Typed consumers: a delivery decoded into its message type, a handler's verdict on it, and the
//! one place that turns the verdict into an ack, a retry or a dead letter.
//!
//! - [`Inbound`]: how a delivery becomes a typed message (any [`Message`], checked against its
//!   routing key, or an enum of several kinds a worker defines).
//! - [`Outcome`]: what the handler decided: done, refused for good, or failed — transiently (the
//!   work may succeed later: retried, `retries_exhausted` at the end) or permanently (the input
//!   is at fault: retried in case, then dead-lettered as `store_refused`).
//! - [`Incoming::settle`]: carries the outcome out and logs (never drops) a failure to do so.
//! - [`consume`]: the whole loop for a worker that handles one message at a time.

use crate::{Bus, BusError};
use crate::{Incoming, Source, Subscription};
use oleg_messages::{decode, DeadLetterReason, Message, Rejection};
use std::future::Future;
use tracing::Instrument;

/// A message as it arrives from a queue.
pub trait Inbound: Sized {
    /// Decodes a delivery of `routing_key` with body `body`, refusing bodies over `max_bytes`.
    fn from_delivery(routing_key: &str, body: &[u8], max_bytes: usize) -> Result<Self, Rejection>;
}

impl<M: Message> Inbound for M {
    fn from_delivery(routing_key: &str, body: &[u8], max_bytes: usize) -> Result<Self, Rejection> {
        if let Some(expected) = M::KIND.routing_key() {
            if routing_key != expected {
                return Err(Rejection::new(
                    DeadLetterReason::Malformed,
                    format!(
                        "routing key {routing_key:?} is not {expected:?} ({})",
                        M::KIND.name()
                    ),
                ));
            }
        }
        decode(body, max_bytes)
    }
}

/// What a handler decided for one delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The work is durable: ack.
    Done,
    /// The message can never be handled: dead-letter it now, with the reason.
    Refused(Rejection),
    /// The work failed; whether another attempt may succeed is `transient`.
    Failed { error: String, transient: bool },
}

impl Outcome {
    pub fn failed(error: impl std::fmt::Display, transient: bool) -> Self {
        Outcome::Failed {
            error: error.to_string(),
            transient,
        }
    }
}

impl BusError {
    /// Whether a later attempt may succeed: the broker comes back, a confirm arrives. Only a
    /// metric that cannot be registered is a lasting fault.
    pub fn is_transient(&self) -> bool {
        !matches!(self, BusError::Metrics(_))
    }
}

impl Incoming {
    /// Decodes this delivery as `M`.
    pub fn decode<M: Inbound>(&self, max_bytes: usize) -> Result<M, Rejection> {
        M::from_delivery(&self.routing_key, &self.body, max_bytes)
    }

    /// Carries out `outcome`: ack; dead-letter; or hand back for another attempt (after
    /// `amqp.max_attempts`, dead-lettered as `retries_exhausted` if transient, `store_refused`
    /// if not). A failure to do so leaves the message unacked, so the broker delivers it again:
    /// it is logged, not returned.
    pub async fn settle(self, outcome: Outcome) {
        let queue = self.queue.clone();
        let settled = match outcome {
            Outcome::Done => self.ack().await,
            Outcome::Refused(rejection) => self.dead_letter(rejection).await,
            Outcome::Failed { error, transient } => {
                let exhausted = if transient {
                    DeadLetterReason::RetriesExhausted
                } else {
                    DeadLetterReason::StoreRefused
                };
                self.retry_or_dead_letter(exhausted, &error).await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(%error, %queue, "could not settle a delivery; the broker will deliver it again");
        }
    }
}

/// Consumes `source` until shutdown, one message at a time: each delivery decoded as `M` (or
/// dead-lettered with the reason it does not decode), handled, and settled by the outcome.
pub async fn consume<M, F, Fut>(bus: Bus, source: Source, max_bytes: usize, handle: F)
where
    M: Inbound,
    F: FnMut(M) -> Fut,
    Fut: Future<Output = Outcome>,
{
    consume_from(Subscription::new(bus, source), max_bytes, handle).await;
}

/// [`consume`], from a subscription the caller made (to watch its [`Subscription::starts`]).
pub async fn consume_from<M, F, Fut>(
    mut subscription: Subscription,
    max_bytes: usize,
    mut handle: F,
) where
    M: Inbound,
    F: FnMut(M) -> Fut,
    Fut: Future<Output = Outcome>,
{
    while let Some(incoming) = subscription.next().await {
        let (span, trace) = (incoming.span(), incoming.trace_id());
        let work = async {
            let outcome = match incoming.decode::<M>(max_bytes) {
                Ok(message) => handle(message).await,
                Err(rejection) => Outcome::Refused(rejection),
            };
            incoming.settle(outcome).await;
        };
        crate::traced(trace, work.instrument(span)).await;
    }
}
