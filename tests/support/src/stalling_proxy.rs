//! A TCP relay that can stall or go down. While stalled it forwards nothing either way but keeps
//! every connection open, as a broker node does that hangs or sits behind a dropped network path:
//! the client sees no error, only silence. It can also hold only the server's answers, so that
//! what a client sends takes effect and it hears nothing back. While down it drops every
//! connection and refuses new ones, as a server does that has stopped: what was sent and not yet
//! passed on is lost.

use crate::proxy::listen;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

#[derive(Clone)]
pub struct StallingProxy {
    port: u16,
    passage: Arc<watch::Sender<Passage>>,
}

/// What the proxy lets through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Passage {
    Open,
    /// The client's bytes pass; the server's are held.
    AnswersStalled,
    Stalled,
    Down,
}

impl Passage {
    fn lets_through(self, to_server: bool) -> bool {
        self == Passage::Open || (to_server && self == Passage::AnswersStalled)
    }
}

impl StallingProxy {
    /// Listens on a free loopback port, relaying to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let passage = Arc::new(watch::channel(Passage::Open).0);
        let relaying = passage.clone();
        let port = listen(upstream, move |client, server| {
            let passage = relaying.clone();
            async move {
                // Refused: both ends dropped before a byte passes.
                if *passage.borrow() == Passage::Down {
                    return;
                }
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(relay(client_read, server_write, passage.subscribe(), true));
                relay(server_read, client_write, passage.subscribe(), false).await;
            }
        })
        .await;
        Self { port, passage }
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
        self.passage.send_replace(Passage::Stalled);
    }

    /// From now on what clients send passes and the server's answers are held, until
    /// [`resume`](Self::resume) (or dropped, on [`go_down`](Self::go_down)).
    pub fn stall_answers(&self) {
        self.passage.send_replace(Passage::AnswersStalled);
    }

    /// Drops every connection through the proxy, with what it holds, and refuses new ones until
    /// [`resume`](Self::resume).
    pub fn go_down(&self) {
        self.passage.send_replace(Passage::Down);
    }

    pub fn resume(&self) {
        self.passage.send_replace(Passage::Open);
    }
}

/// Copies `from` to `to` (toward the server or toward the client), holding what it read while
/// that way is stalled; ends (dropping both) when the proxy goes down.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut passage: watch::Receiver<Passage>,
    to_server: bool,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            },
            _ = passage.wait_for(|passage| *passage == Passage::Down) => return,
        };
        match passage
            .wait_for(|passage| *passage == Passage::Down || passage.lets_through(to_server))
            .await
        {
            Ok(passage) if *passage != Passage::Down => {}
            _ => return,
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
