//! A JSON request/response service on [`wsloop::json`] (feature `json`).
//!
//! ```text
//! cargo run --features json --example json_echo -- [ADDR]    # default 127.0.0.1:8080
//! ```
//! It prints `listening on ws://ADDR/ws` and runs until SIGINT/SIGTERM. Each text (or
//! binary) message is a request; each gets one text reply:
//!
//! ```text
//! {"op":"add","a":1,"b":2}   ->  {"result":3}
//! {"op":"div","a":7,"b":2}   ->  {"result":3}      (integer division)
//! {"op":"div","a":1,"b":0}   ->  {"error":"division by zero"}
//! {"op":"add","a":1          ->  {"error":"invalid JSON message: EOF while parsing ..."}
//! ```
//! Operations are `add`, `sub`, `mul` and `div` on 64-bit integers (overflow is an
//! error). A malformed request is answered with an error and the connection stays open.

use serde::{Deserialize, Serialize};
use std::io;
use wsloop::json::{SendJson, from_message};
use wsloop::{Config, ConnId, Ctx, Handler, Message, Server};

/// A request: `{"op":"add","a":1,"b":2}`.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Add { a: i64, b: i64 },
    Sub { a: i64, b: i64 },
    Mul { a: i64, b: i64 },
    Div { a: i64, b: i64 },
}

/// A reply: `{"result":3}` or `{"error":"..."}`.
#[derive(Serialize)]
#[serde(untagged)]
enum Reply {
    Result { result: i64 },
    Error { error: String },
}

impl Request {
    fn eval(&self) -> Result<i64, String> {
        let (value, what) = match *self {
            Request::Add { a, b } => (a.checked_add(b), "overflow"),
            Request::Sub { a, b } => (a.checked_sub(b), "overflow"),
            Request::Mul { a, b } => (a.checked_mul(b), "overflow"),
            Request::Div { b: 0, .. } => (None, "division by zero"),
            Request::Div { a, b } => (a.checked_div(b), "overflow"),
        };
        value.ok_or_else(|| what.to_string())
    }
}

struct Calculator;

impl Handler for Calculator {
    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        let outcome = from_message::<Request>(&msg)
            .map_err(|e| e.to_string())
            .and_then(|req| req.eval());
        let reply = match outcome {
            Ok(result) => Reply::Result { result },
            Err(error) => Reply::Error { error },
        };
        if let Err(e) = ctx.send_json(conn, &reply) {
            // Unreachable for this reply type; a real service would log it.
            eprintln!("reply not sent: {e}");
        }
    }
}

fn main() -> io::Result<()> {
    // Server::bind parses it, and says what is wrong with a bad one.
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let server = Server::bind(addr, Config::default(), Calculator)?;
    println!(
        "listening on ws://{}{}",
        server.local_addr(),
        server.config().path
    );
    server.run()
}
