//! A client for request/reply over the broker (what the bot frontend does to ask the ranker): an
//! exclusive reply queue of its own, replies matched to requests by `correlation_id`.

use crate::{Bus, BusError, QueueName};
use futures::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use oleg_messages::{encode, Message};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

pub struct RpcClient {
    bus: Bus,
    reply_queue: String,
    pending: Pending,
    _channel: lapin::Channel,
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the reply queue was lost")]
    Disconnected,
}

impl RpcClient {
    pub async fn new(bus: &Bus) -> Result<Self, BusError> {
        let (channel, _) = bus.open_channel(None).await?;
        let reply_queue = bus.topology().declare_replica_queue(&channel, &[]).await?;
        let mut consumer = channel
            .basic_consume(
                reply_queue.clone().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let pending: Pending = Arc::default();
        let waiting = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let id = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|s| s.to_string());
                if let Some(sender) =
                    id.and_then(|id| waiting.lock().expect("not poisoned").remove(&id))
                {
                    let _ = sender.send(delivery.data);
                }
            }
        });
        Ok(Self {
            bus: bus.clone(),
            reply_queue,
            pending,
            _channel: channel,
        })
    }

    /// Sends `request` to a shared queue and waits for its reply body.
    pub async fn call<M: Message>(
        &self,
        queue: QueueName,
        request: &M,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        self.call_raw(queue, &encode(request), timeout).await
    }

    /// Sends raw bytes (tests of malformed requests).
    pub async fn call_raw(
        &self,
        queue: QueueName,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (sender, receiver) = oneshot::channel();
        self.pending
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), sender);
        let properties = BasicProperties::default()
            .with_reply_to(self.reply_queue.clone().into())
            .with_correlation_id(id.clone().into());
        let sent = self
            .bus
            .publish_bytes("", &self.bus.topology().queue(queue), body, properties)
            .await;
        if let Err(error) = sent {
            self.pending.lock().expect("not poisoned").remove(&id);
            return Err(error.into());
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(RpcError::Disconnected),
            Err(_) => {
                self.pending.lock().expect("not poisoned").remove(&id);
                Err(RpcError::Timeout(timeout))
            }
        }
    }
}
