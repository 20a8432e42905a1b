// gorilla/websocket echo server for the wsloop benchmarks. Built in GOPATH
// mode from Debian's golang-go and golang-github-gorilla-websocket-dev:
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o gorilla-echo echo.go
//
// and run with GOMAXPROCS=1. Echoes text and binary with
// ReadMessage/WriteMessage; the Upgrader accepts any Origin.
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/gorilla/websocket"
)

var upgrader = websocket.Upgrader{CheckOrigin: func(r *http.Request) bool { return true }}

func echo(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	for {
		mt, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(mt, msg); err != nil {
			return
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9003", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.SetOutput(os.Stderr)
	log.Printf("gorilla-echo listening on ws://%s/ws", ln.Addr())
	http.HandleFunc("/", echo)
	log.Fatal(http.Serve(ln, nil))
}
