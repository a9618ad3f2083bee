//! The HTTP/1.1 server: accepts connections and serves the router on each, until told to stop.
//!
//! `axum::serve` is not used because its connection builder cannot be configured: it serves
//! HTTP/1 and HTTP/2 alike, and first peeks at each connection to tell them apart. That peek makes
//! hyper's first read 24 bytes long, so the read buffer it then reserves doubles to 16 KiB, held
//! for the connection's life: half of what an open event stream cost the API. runq's API speaks
//! HTTP/1.1 only (axum was built without HTTP/2), so each connection goes straight to hyper's
//! HTTP/1 server, whose read buffer stays at 8 KiB.

use std::future::Future;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

/// Serves `router` on the connections `listener` accepts until `stop` completes, then lets the
/// open connections finish their requests and waits for them.
pub async fn serve(listener: TcpListener, router: axum::Router, stop: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let connection = graceful.watch(connection(tcp, router.clone()));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One client connection.
fn connection(
    tcp: TcpStream,
    router: axum::Router,
) -> http1::Connection<TokioIo<TcpStream>, TowerToHyperService<axum::Router>> {
    // event frames are small writes: without NODELAY, Nagle's algorithm holds them back
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!(error = %e, "could not set TCP_NODELAY");
    }
    // writes are flattened into hyper's one buffer, which a queue of buffers would only add to
    http1::Builder::new().writev(false).serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router))
}

/// A connection that failed before it was accepted is the client's problem; anything else (out
/// of file descriptors) is ours, and retrying at once would spin.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
