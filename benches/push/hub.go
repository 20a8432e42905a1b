// push-hub: the gorilla/websocket counterpart of push-server's thread mode, in the
// hub pattern of gorilla's chat example: each client has a buffered `send` channel
// (256) drained by its own writePump goroutine, the single writer of its
// connection. Once a client sends the text "go", -producers goroutines send
// -messages 64-byte binary messages in all (send time in bytes 0..8, CLOCK_MONOTONIC
// ns, little-endian), round robin over the clients then open; a full channel makes
// the producer sleep 50 µs and retry (counted). Other text is echoed through the
// same channel. Prints "listening on" when ready and "PRODUCED ..." when done.
// Built like benches/gorilla/echo.go (GOPATH mode, Debian's packages) and run with
// GOMAXPROCS=1:
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o push-hub hub.go
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
)

type outMsg struct {
	typ  int
	data []byte
}

type client struct {
	conn *websocket.Conn
	send chan outMsg
}

type hub struct {
	mu      sync.Mutex
	clients []*client
	started bool
}

var (
	upgrader  = websocket.Upgrader{CheckOrigin: func(r *http.Request) bool { return true }}
	messages  = flag.Int("messages", 1000000, "messages in all")
	producers = flag.Int("producers", 1, "producer goroutines")
	rate      = flag.Int("rate", 0, "messages per second in all (0: as fast as accepted)")
	full      atomic.Int64
	running   atomic.Int64
)

// monoNs is CLOCK_MONOTONIC, the clock push-client compares against.
func monoNs() uint64 {
	var ts syscall.Timespec
	// CLOCK_MONOTONIC = 1
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0)
	return uint64(ts.Sec)*1e9 + uint64(ts.Nsec)
}

func payload(seq uint64) []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint64(b[0:8], monoNs())
	binary.LittleEndian.PutUint64(b[8:16], seq)
	return b
}

func (h *hub) produce(k int, targets []*client) {
	started := time.Now()
	p := *producers
	n := *messages / p
	if k < *messages%p {
		n++
	}
	r := float64(*rate) / float64(p)
	for sent := 0; sent < n; {
		until := n
		if r > 0 {
			if d := int(time.Since(started).Seconds() * r); d < n {
				until = d
			}
		}
		if sent >= until {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		for ; sent < until; sent++ {
			c := targets[(sent+k*len(targets)/p)%len(targets)]
			m := outMsg{websocket.BinaryMessage, payload(uint64(sent*p + k))}
			for {
				select {
				case c.send <- m:
				default:
					full.Add(1)
					time.Sleep(50 * time.Microsecond)
					continue
				}
				break
			}
		}
	}
	if running.Add(-1) == 0 {
		fmt.Fprintf(os.Stderr, "PRODUCED messages=%d full=%d dropped=0 secs=%.3f\n",
			*messages, full.Load(), time.Since(started).Seconds())
	}
}

func (h *hub) start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started || len(h.clients) == 0 {
		return
	}
	h.started = true
	targets := append([]*client(nil), h.clients...)
	log.Printf("go: %d targets", len(targets))
	running.Store(int64(*producers))
	for k := 0; k < *producers; k++ {
		go h.produce(k, targets)
	}
}

func (c *client) writePump() {
	for m := range c.send {
		if err := c.conn.WriteMessage(m.typ, m.data); err != nil {
			c.conn.Close()
			for range c.send { // keep producers from blocking on a dead client
			}
			return
		}
	}
}

func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &client{conn: conn, send: make(chan outMsg, 256)}
	h.mu.Lock()
	h.clients = append(h.clients, c)
	h.mu.Unlock()
	go c.writePump()
	for {
		mt, msg, err := conn.ReadMessage()
		if err != nil {
			conn.Close()
			return
		}
		if mt == websocket.TextMessage {
			if string(msg) == "go" {
				h.start()
			} else {
				c.send <- outMsg{mt, msg}
			}
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9004", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.SetOutput(os.Stderr)
	log.Printf("push-hub listening on ws://%s/ws", ln.Addr())
	h := &hub{}
	http.HandleFunc("/", h.serve)
	log.Fatal(http.Serve(ln, nil))
}
