//! tokio-fanout: the fan-out baseline on tokio-tungstenite and a
//! `tokio::sync::broadcast` channel, on a `current_thread` runtime (the usual
//! tokio broadcast recipe). A connection whose request has `topic=` in its
//! query is a subscriber: a task per subscriber receives from the channel and
//! sends each message (one `send`, which flushes, per message); any other
//! connection is a publisher whose messages go into the channel. A subscriber
//! that lags more than the channel's 1,024 messages loses them.
//!
//! Usage: tokio-fanout --listen 127.0.0.1:PORT

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use wsloop_bench_kit::{Args, die, raise_nofile};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::from_env();
    let listen = args.get("listen").unwrap_or("127.0.0.1:9003").to_string();
    args.finish();
    raise_nofile();
    let listener = TcpListener::bind(&listen)
        .await
        .unwrap_or_else(|e| die(&format!("bind {listen}: {e}")));
    eprintln!("tokio-fanout listening on ws://{listen}/ws");
    let (tx, _) = broadcast::channel::<Message>(1024);
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut is_sub = false;
            // the error type is tungstenite's ErrorResponse, fixed by its Callback trait
            #[allow(clippy::result_large_err)]
            let cb = |req: &Request, resp: Response| {
                is_sub = req.uri().query().is_some_and(|q| q.contains("topic="));
                Ok(resp)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(sock, cb).await else {
                return;
            };
            let (mut w, mut r) = ws.split();
            if !is_sub {
                while let Some(Ok(m)) = r.next().await {
                    if m.is_text() || m.is_binary() {
                        let _ = tx.send(m);
                    }
                }
                return;
            }
            let mut rx = tx.subscribe();
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Ok(m) => if w.send(m).await.is_err() { break },
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    },
                    // reading answers pings and notices the close
                    m = r.next() => if !matches!(m, Some(Ok(_))) { break },
                }
            }
        });
    }
}
