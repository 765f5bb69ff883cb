//! What the test proxies share: a loopback listener that pairs each client with a connection
//! of its own to the upstream server.

use std::future::Future;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Listens on a free loopback port and, on a task per client, connects it to `upstream`
/// (`host:port`) and hands both to `relay`; a client the upstream refuses is dropped. The port.
pub(crate) async fn listen<Relay, Relaying>(upstream: String, relay: Relay) -> u16
where
    Relay: Fn(TcpStream, TcpStream) -> Relaying + Send + Sync + 'static,
    Relaying: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let port = listener.local_addr().expect("bound").port();
    let relay = Arc::new(relay);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (relay, upstream) = (relay.clone(), upstream.clone());
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(&upstream).await {
                    relay(client, server).await;
                }
            });
        }
    });
    port
}

/// A `mongodb://` URI through a proxy on `port` (a direct connection: no discovery around it).
pub(crate) fn mongodb_uri(port: u16) -> String {
    format!("mongodb://127.0.0.1:{port}/?directConnection=true")
}
