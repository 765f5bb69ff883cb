//! A TCP proxy in front of the store that can fail one chosen request: it reads the MongoDB wire
//! protocol's messages (a little-endian length, then the message) from the client, and when
//! armed cuts the connection that carries the n-th message containing every one of a set of
//! byte strings (such as `insert` and `deliveries`) — the store never sees it, the client sees a
//! network error. Later connections pass again, so a client can go on (and undo its work). It
//! can also hold one chosen message back until told to let it through: the client waits for its
//! answer as on a slow store, while its other requests pass.

use crate::proxy::listen;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

#[derive(Default)]
struct Trap {
    /// Byte strings the message must all contain.
    needles: Vec<Vec<u8>>,
    /// Matching messages to let through before cutting.
    pass: usize,
    /// Matching messages to cut then (each on its connection), before passing all again.
    cut: usize,
}

#[derive(Clone)]
pub struct FaultProxy {
    port: u16,
    faults: Arc<Faults>,
}

/// What the proxy's relays share: the armed trap, how many messages it cut, and the message to
/// hold back, with whether it is held and whether it may go.
#[derive(Default)]
struct Faults {
    trap: Mutex<Option<Trap>>,
    cuts: AtomicUsize,
    hold: Mutex<Option<Vec<Vec<u8>>>>,
    held: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl FaultProxy {
    /// Listens on a free loopback port, forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let faults = Arc::new(Faults::default());
        let relaying = faults.clone();
        let port = listen(upstream, move |client, server| {
            let faults = relaying.clone();
            async move { faults.relay(client, server).await }
        })
        .await;
        Self { port, faults }
    }

    /// A `mongodb://` URI through the proxy (a direct connection: no discovery around it).
    pub fn mongodb_uri(&self) -> String {
        crate::proxy::mongodb_uri(self.port)
    }

    /// Cuts the connection of the `(pass + 1)`-th message from now that contains all `needles`.
    pub fn fail_nth(&self, needles: &[&[u8]], pass: usize) {
        self.arm(needles, pass, 1);
    }

    /// Cuts the connections of the next `cut` messages that contain all `needles` (a driver
    /// retries a read once after a dropped connection: two cuts fail it).
    pub fn fail_next(&self, needles: &[&[u8]], cut: usize) {
        self.arm(needles, 0, cut);
    }

    fn arm(&self, needles: &[&[u8]], pass: usize, cut: usize) {
        *self.faults.trap.lock().unwrap() = Some(Trap {
            needles: needles.iter().map(|n| n.to_vec()).collect(),
            pass,
            cut,
        });
    }

    /// How many messages were cut.
    pub fn cuts(&self) -> usize {
        self.faults.cuts.load(Ordering::SeqCst)
    }

    /// Holds back the next message that contains all `needles` (later messages on its
    /// connection wait behind it) until [`release`](Self::release).
    pub fn hold_next(&self, needles: &[&[u8]]) {
        self.faults.held.send_replace(false);
        self.faults.released.send_replace(false);
        *self.faults.hold.lock().unwrap() = Some(needles.iter().map(|n| n.to_vec()).collect());
    }

    /// Waits until the message [`hold_next`](Self::hold_next) named has come and is held.
    pub async fn wait_held(&self) {
        let mut held = self.faults.held.subscribe();
        let _ = held.wait_for(|held| *held).await;
    }

    /// Lets the held message go on to the store.
    pub fn release(&self) {
        self.faults.released.send_replace(true);
    }
}

fn contains_all(message: &[u8], needles: &[Vec<u8>]) -> bool {
    needles.iter().all(|needle| {
        message
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
    })
}

impl Faults {
    async fn relay(&self, client: TcpStream, server: TcpStream) {
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let replies = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        });
        loop {
            let mut length = [0u8; 4];
            if client_read.read_exact(&mut length).await.is_err() {
                break;
            }
            let size = i32::from_le_bytes(length).max(4) as usize;
            let mut message = vec![0u8; size - 4];
            if client_read.read_exact(&mut message).await.is_err() {
                break;
            }
            if self.trips(&message) {
                self.cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if self.holds(&message) {
                let mut released = self.released.subscribe();
                self.held.send_replace(true);
                let _ = released.wait_for(|released| *released).await;
            }
            if server_write.write_all(&length).await.is_err()
                || server_write.write_all(&message).await.is_err()
            {
                break;
            }
        }
        // Dropping both halves closes both connections.
        replies.abort();
    }

    fn trips(&self, message: &[u8]) -> bool {
        let mut trap = self.trap.lock().unwrap();
        let Some(armed) = trap.as_mut() else {
            return false;
        };
        if !contains_all(message, &armed.needles) {
            return false;
        }
        if armed.pass > 0 {
            armed.pass -= 1;
            return false;
        }
        armed.cut -= 1;
        if armed.cut == 0 {
            *trap = None;
        }
        true
    }

    /// Whether this is the message to hold (the first that matches; the hold is then spent).
    fn holds(&self, message: &[u8]) -> bool {
        let mut hold = self.hold.lock().unwrap();
        let matches = hold
            .as_ref()
            .is_some_and(|needles| contains_all(message, needles));
        if matches {
            *hold = None;
        }
        matches
    }
}
