mod common;
use common::*;
use tungstenite::Message;

#[test]
fn echoes_text() {
    let server = Server::start(&[]);
    let mut ws = connect(server.url());
    assert_echo(&mut ws, Message::text("hello"));
}
