//! A TCP relay that can stall: while stalled it forwards nothing either way but keeps every
//! connection open, as a broker node does that hangs or sits behind a dropped network path. The
//! client sees no error, only silence.

use crate::proxy::listen;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

#[derive(Clone)]
pub struct StallingProxy {
    port: u16,
    stalled: Arc<watch::Sender<bool>>,
}

impl StallingProxy {
    /// Listens on a free loopback port, relaying to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let stalled = Arc::new(watch::channel(false).0);
        let relaying = stalled.clone();
        let port = listen(upstream, move |client, server| {
            let stalled = relaying.clone();
            async move {
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(relay(client_read, server_write, stalled.subscribe()));
                relay(server_read, client_write, stalled.subscribe()).await;
            }
        })
        .await;
        Self { port, stalled }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `mongodb://` URI through the proxy, for a store behind it.
    pub fn mongodb_uri(&self) -> String {
        crate::proxy::mongodb_uri(self.port)
    }

    /// The test broker's `amqp://` URI through the proxy, for a bus behind it.
    pub fn amqp_uri(&self) -> String {
        crate::amqp_uri().replacen(
            &crate::amqp_address(),
            &format!("127.0.0.1:{}", self.port),
            1,
        )
    }

    /// From now on nothing passes, until [`resume`](Self::resume).
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }
}

/// Copies `from` to `to`, holding what it read while stalled.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if stalled.wait_for(|stalled| !stalled).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
