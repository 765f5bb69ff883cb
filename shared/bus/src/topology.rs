//! Every exchange and queue OLEG uses, named under one prefix, declared idempotently.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use oleg_messages::MessageKind;

/// Header carrying the publish time (Unix milliseconds) of every message.
pub const SENT_AT_HEADER: &str = "x-sent-at-ms";

/// Header carrying a dead letter's machine-readable reason.
pub const REASON_HEADER: &str = "x-oleg-reason";

/// The broker's own cap on deliveries of one message (a quorum-queue argument). The workers
/// dead-letter long before (`amqp.max_attempts`); this catches a message that crashes its worker
/// every time, which no worker lives to dead-letter. It is a constant because changing a queue
/// argument makes redeclaring an existing queue fail.
pub const BROKER_DELIVERY_LIMIT: i64 = 200;

/// The durable, shared (competing-consumer) queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueName {
    /// Votes and user starts from the bot, for ingest.
    Ingest,
    /// Votes-ingested notices, for the trainer.
    Trainer,
    /// Recommendation RPC requests, for the ranker.
    Recommend,
    /// Channels to follow, for the scraper.
    Scraper,
    /// Everything refused or failed too often.
    DeadLetters,
}

impl QueueName {
    pub const ALL: [QueueName; 5] = [
        QueueName::Ingest,
        QueueName::Trainer,
        QueueName::Recommend,
        QueueName::Scraper,
        QueueName::DeadLetters,
    ];

    fn suffix(self) -> &'static str {
        match self {
            QueueName::Ingest => "ingest",
            QueueName::Trainer => "trainer",
            QueueName::Recommend => "recommend",
            QueueName::Scraper => "scraper",
            QueueName::DeadLetters => "dead-letters",
        }
    }

    /// Routing keys bound on the events exchange.
    fn bindings(self) -> Vec<&'static str> {
        let key = |k: MessageKind| k.routing_key().expect("event kinds have routing keys");
        match self {
            QueueName::Ingest => vec![key(MessageKind::Vote), key(MessageKind::UserStarted)],
            QueueName::Trainer => vec![key(MessageKind::VotesIngested)],
            QueueName::Scraper => vec![key(MessageKind::AddChannel)],
            QueueName::Recommend | QueueName::DeadLetters => vec![],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Topic exchange for every event; routing keys come from [`MessageKind::routing_key`].
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Topic exchange for dead letters: `dead.<reason>` from workers, `poison.<queue>` from the broker.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn queue(&self, queue: QueueName) -> String {
        format!("{}.{}", self.prefix, queue.suffix())
    }

    /// Declares exchanges, queues and bindings. Safe to repeat: same arguments, same result.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for exchange in [self.events_exchange(), self.dead_exchange()] {
            channel
                .exchange_declare(
                    exchange.into(),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        for queue in QueueName::ALL {
            let name = self.queue(queue);
            let mut arguments = FieldTable::default();
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            if queue != QueueName::DeadLetters {
                arguments.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString(self.dead_exchange().into()),
                );
                arguments.insert(
                    "x-dead-letter-routing-key".into(),
                    AMQPValue::LongString(format!("poison.{}", queue.suffix()).into()),
                );
                arguments.insert(
                    "x-delivery-limit".into(),
                    AMQPValue::LongLongInt(BROKER_DELIVERY_LIMIT),
                );
            }
            channel
                .queue_declare(
                    name.clone().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    arguments,
                )
                .await?;
            for key in queue.bindings() {
                self.bind(channel, &name, &self.events_exchange(), key)
                    .await?;
            }
        }
        self.bind(
            channel,
            &self.queue(QueueName::DeadLetters),
            &self.dead_exchange(),
            "#",
        )
        .await
    }

    /// Declares a queue of this replica's own (server-named, deleted when the replica goes) bound
    /// to `keys`: for notices every replica must see, such as a new model.
    pub async fn declare_replica_queue(
        &self,
        channel: &Channel,
        keys: &[&str],
    ) -> Result<String, lapin::Error> {
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let name = queue.name().to_string();
        for key in keys {
            self.bind(channel, &name, &self.events_exchange(), key)
                .await?;
        }
        Ok(name)
    }

    async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> Result<(), lapin::Error> {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }
}
