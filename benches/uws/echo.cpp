// WebSocket echo server on uWebSockets, for benches/run.sh's optional "uws"
// server. Our own code against uWS's public API (uWS itself is not part of
// this repository; see "uWebSockets C++ (optional)" in BENCHMARKS.md).
//
// Behaves like uWS's stock examples/EchoServer.cpp, except for the settings
// the kit needs: every message is sent back with its own opcode, compression
// off, payloads up to 64 MiB (the "large" scenario sends 1 MiB), the longest
// idle timeout uWS allows (960 s), no TLS, one thread.
//
// Usage: echo --listen HOST:PORT   (prints "listening on HOST:PORT" to stderr)
#include "App.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char **argv) {
    if (argc != 3 || std::strcmp(argv[1], "--listen") != 0 || !std::strrchr(argv[2], ':')) {
        std::fprintf(stderr, "usage: %s --listen HOST:PORT\n", argv[0]);
        return 2;
    }
    std::string addr = argv[2];
    std::string host = addr.substr(0, addr.rfind(':'));
    int port = std::atoi(addr.c_str() + addr.rfind(':') + 1);
    // a peer that resets mid-write must not kill the server (uSockets sends
    // with MSG_NOSIGNAL already; this covers any other path)
    std::signal(SIGPIPE, SIG_IGN);

    struct PerSocketData {};
    uWS::App().ws<PerSocketData>("/*", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = 64 * 1024 * 1024,
        .idleTimeout = 960,
        .maxBackpressure = 100 * 1024 * 1024, // as the stock example
        .closeOnBackpressureLimit = false,
        .resetIdleTimeoutOnSend = false,
        .sendPingsAutomatically = true,
        .message = [](auto *ws, std::string_view message, uWS::OpCode opCode) {
            ws->send(message, opCode, false);
        },
    }).listen(host, port, [&](auto *listen_socket) {
        if (listen_socket) {
            std::fprintf(stderr, "listening on %s\n", addr.c_str());
        } else {
            std::fprintf(stderr, "cannot listen on %s\n", addr.c_str());
            std::exit(1);
        }
    }).run();
    return 0;
}
