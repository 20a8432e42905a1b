// fanout-hub: the gorilla/websocket side of the fan-out benchmark, in the hub pattern
// of gorilla's chat example: one hub goroutine owns the subscribers, a publisher's
// messages go to it through the broadcast channel, and it puts each one into every
// subscriber's buffered `send` channel (256), drained by that subscriber's own
// writePump goroutine, the single writer of its connection (one WriteMessage per
// message: the benchmark's client reads each message as a frame of its own). A
// subscriber whose channel is full is dropped, as in the chat example.
//
//	ws://ADDR/ws?topic=T     subscribe (one topic per connection)
//	ws://ADDR/ws?publish=T   each message received is published to T
//
// Built like benches/gorilla/echo.go (GOPATH mode, Debian's packages), run with
// GOMAXPROCS=1:
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o fanout-hub hub.go
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/gorilla/websocket"
)

type client struct {
	conn  *websocket.Conn
	topic string
	send  chan []byte
}

type publication struct {
	topic string
	data  []byte
}

type hub struct {
	register   chan *client
	unregister chan *client
	broadcast  chan publication
	topics     map[string]map[*client]bool
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			if h.topics[c.topic] == nil {
				h.topics[c.topic] = map[*client]bool{}
			}
			h.topics[c.topic][c] = true
		case c := <-h.unregister:
			if _, ok := h.topics[c.topic][c]; ok {
				delete(h.topics[c.topic], c)
				close(c.send)
			}
		case p := <-h.broadcast:
			for c := range h.topics[p.topic] {
				select {
				case c.send <- p.data:
				default:
					close(c.send)
					delete(h.topics[p.topic], c)
				}
			}
		}
	}
}

var upgrader = websocket.Upgrader{CheckOrigin: func(r *http.Request) bool { return true }}

func serve(h *hub, w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	q := r.URL.Query()
	if topic := q.Get("publish"); topic != "" {
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				conn.Close()
				return
			}
			h.broadcast <- publication{topic, data}
		}
	}
	c := &client{conn: conn, topic: q.Get("topic"), send: make(chan []byte, 256)}
	h.register <- c
	go func() { // writePump
		for data := range c.send {
			if err := c.conn.WriteMessage(websocket.TextMessage, data); err != nil {
				break
			}
		}
		c.conn.Close()
	}()
	for { // readPump: pings, the close, and noticing the end
		if _, _, err := conn.ReadMessage(); err != nil {
			h.unregister <- c
			return
		}
	}
}

func main() {
	addr := "127.0.0.1:8080"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	h := &hub{make(chan *client), make(chan *client), make(chan publication, 256), map[string]map[*client]bool{}}
	go h.run()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "listening on ws://%s/ws\n", ln.Addr())
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { serve(h, w, r) })
	log.Fatal(http.Serve(ln, nil))
}
