//! OLEG's RabbitMQ bus on lapin.
//!
//! - [`Topology`] names and declares everything, idempotently, on every (re)connect.
//! - [`Bus::publish`] returns only once the broker confirmed a persistent message.
//! - [`Subscription`] yields [`Incoming`] deliveries, decoded by type ([`Inbound`]); a handler's
//!   [`Outcome`] settles each ([`Incoming::settle`]): ack once the work is durable, dead-letter
//!   what is refused (with a reason), retry what failed, up to `amqp.max_attempts`. [`consume`]
//!   is the whole loop for one message at a time.
//! - [`DeadLetterQueue`] is the operator's view of the dead letters: list, replay, remove.
//! - Connection or channel loss is survived: reconnect with capped, jittered exponential backoff,
//!   redeclare, resume. Unacked deliveries go back to their queue on the broker, so nothing is lost.

mod backoff;
mod connection;
mod consumer;
mod dead_letters;
mod handling;
mod metrics;
mod rpc;
mod topology;
mod trace;

pub use backoff::Backoff;
pub use connection::{Bus, QueueState, Routed};
pub use consumer::{Incoming, Source, Subscription};
pub use dead_letters::{DeadLetterQueue, HeldLetter, ReplayError, POISON_REASON, REPLAYS_HEADER};
pub use handling::{consume, consume_from, Inbound, Outcome};
pub use rpc::{is_direct_reply_to, ReplyMode, RpcClient, RpcError};
pub use topology::{QueueName, Topology, BROKER_DELIVERY_LIMIT, REASON_HEADER, SENT_AT_HEADER};
pub use trace::{current_trace, in_trace, new_trace, traced, TRACE_HEADER};

/// Errors of the bus layer.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker did not confirm the publish within {0:?}")]
    ConfirmTimeout(std::time::Duration),
    #[error("shutting down")]
    ShuttingDown,
    #[error("no queue {0} to take the message")]
    NoQueue(String),
    /// Whether the message reached a queue is unknown: an attempt went out on a channel lost
    /// before its confirm, and the retry was returned unroutable (the queue may have gone since).
    #[error("a publish to {0} was returned unroutable after an earlier attempt that may have been queued")]
    ReturnedAfterLoss(String),
    #[error("could not register a metric: {0}")]
    Metrics(#[from] prometheus::Error),
}
