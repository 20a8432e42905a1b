//! tokio-echo: the Rust WebSocket echo server a user would pick instead of
//! wsloop: tokio-tungstenite on a `current_thread` runtime with the default
//! tungstenite configuration, echoing text and binary messages. The echo loop
//! is the upstream tokio-tungstenite example (`read.forward(write)`), which
//! batches writes and flushes when the reader has nothing more.
//!
//! Usage: tokio-echo --listen 127.0.0.1:PORT

use futures_util::{StreamExt, TryStreamExt, future};
use tokio::net::{TcpListener, TcpStream};
use wsloop_bench_kit::{Args, raise_nofile};

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|m| future::ready(m.is_text() || m.is_binary()))
        .forward(write)
        .await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::from_env();
    let listen = args.get("listen").unwrap_or("127.0.0.1:9002").to_string();
    args.finish();
    raise_nofile();
    let listener = TcpListener::bind(&listen).await.expect("bind");
    eprintln!(
        "tokio-echo listening on ws://{}/ws",
        listener.local_addr().unwrap()
    );
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::spawn(serve(s));
            }
            Err(e) => {
                eprintln!("accept: {e}");
                // e.g. EMFILE: back off briefly instead of spinning
                tokio::task::yield_now().await;
            }
        }
    }
}
