package fluxtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/fluxstream/fluxstream/sources/flux/wire"
)

// Values the recorded broker put in its messages (instance owner 6001).
const (
	OwnerUserID   = 6001
	ownerRolemask = 0x5 // as recorded: FLUX_ROLE_OWNER | FLUX_ROLE_USER
	eventRoute    = "d1789f5d-014b-45ae-aa01-bc7e018fede9"
)

// Broker serves an Instance on a unix socket.
type Broker struct {
	Path     string
	instance *Instance
	ln       net.Listener

	mu         sync.Mutex
	conns      map[*conn]struct{}
	reject     syscall.Errno // handshake byte for new connections (0: accept)
	refuse     *refusal
	closeAfter int // drop a connection after this many journal responses (0: never)
	requests   []Request
	wg         sync.WaitGroup
}

type refusal struct {
	errnum syscall.Errno
	msg    string
}

// Request is what a client asked for, recorded for assertions.
type Request struct {
	Topic   string
	Payload string
	Flags   uint8
}

// NewBroker listens on a new socket in dir (dir/local, like a broker's
// rundir) and serves in.
func NewBroker(dir string, in *Instance) (*Broker, error) {
	b := &Broker{Path: filepath.Join(dir, "local"), instance: in, conns: map[*conn]struct{}{}}
	if err := b.listen(); err != nil {
		return nil, err
	}
	return b, nil
}

// URI is the local:// URI of the broker.
func (b *Broker) URI() string { return "local://" + b.Path }

func (b *Broker) listen() error {
	os.Remove(b.Path)
	ln, err := net.Listen("unix", b.Path)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.ln = ln
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			// The handshake of flux-core's usock: one byte, 0 or an errno.
			b.mu.Lock()
			reject := b.reject
			b.mu.Unlock()
			if reject != 0 {
				nc.Write([]byte{byte(reject)})
				nc.Close()
				continue
			}
			if _, err := nc.Write([]byte{0}); err != nil {
				nc.Close()
				continue
			}
			c := &conn{b: b, nc: nc, streams: map[uint32]chan struct{}{}}
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				c.serve()
			}()
		}
	}()
	return nil
}

// Refuse makes journal requests fail with errnum and msg (EPERM "Request
// requires owner credentials" is what a guest gets); errnum 0 lifts it.
func (b *Broker) Refuse(errnum syscall.Errno, msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if errnum == 0 {
		b.refuse = nil
		return
	}
	b.refuse = &refusal{errnum, msg}
}

// RejectConnections makes the handshake refuse new connections with errnum
// (EPERM is what a user who is not the owner gets); 0 accepts again.
func (b *Broker) RejectConnections(errnum syscall.Errno) {
	b.mu.Lock()
	b.reject = errnum
	b.mu.Unlock()
}

// CloseAfter drops each connection after it was sent n journal responses
// (backlog, sentinel and live), as a crashing broker would; 0 turns it off.
func (b *Broker) CloseAfter(n int) {
	b.mu.Lock()
	b.closeAfter = n
	b.mu.Unlock()
}

// connections is a snapshot of the open client connections.
func (b *Broker) connections() []*conn {
	b.mu.Lock()
	defer b.mu.Unlock()
	conns := make([]*conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	return conns
}

// DropConnections closes every client connection abruptly.
func (b *Broker) DropConnections() {
	for _, c := range b.connections() {
		c.close()
	}
}

// Unload ends every journal stream with ENODATA, as unloading the
// job-manager does; connections stay up.
func (b *Broker) Unload() {
	for _, c := range b.connections() {
		c.endStreams()
	}
}

// Stop closes the listener and every connection (a broker going down).
func (b *Broker) Stop() {
	b.mu.Lock()
	ln := b.ln
	b.ln = nil
	b.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	b.DropConnections()
	b.inst().wake()
}

// Restart listens again after Stop (a broker coming back).
func (b *Broker) Restart() error { return b.listen() }

// inst is the instance being served.
func (b *Broker) inst() *Instance {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.instance
}

// Instance is the instance being served.
func (b *Broker) Instance() *Instance { return b.inst() }

// RestartWith plays an instance restart on the same socket: the broker
// goes down (every connection drops, as in Stop) and comes back serving
// in, e.g. a new instance started without the old one's KVS, whose jobs
// get ids the old instance already used (see Instance.Reincarnate).
// Between Stop and RestartWith a consumer cannot connect; RestartWith
// alone does both at once.
func (b *Broker) RestartWith(in *Instance) error {
	old := b.inst()
	b.Stop()
	b.mu.Lock()
	b.instance = in
	b.mu.Unlock()
	old.wake()
	return b.listen()
}

// Swap replaces the instance while the broker is stopped (after Stop,
// before Restart).
func (b *Broker) Swap(in *Instance) {
	old := b.inst()
	b.mu.Lock()
	b.instance = in
	b.mu.Unlock()
	old.wake()
}

// Close stops the broker and waits for its goroutines.
func (b *Broker) Close() {
	b.Stop()
	b.wg.Wait()
}

// Requests returns what clients asked so far.
func (b *Broker) Requests() []Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Request(nil), b.requests...)
}

// Connections is the number of open client connections.
func (b *Broker) Connections() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

type conn struct {
	b       *Broker
	nc      net.Conn
	wmu     sync.Mutex
	mu      sync.Mutex
	streams map[uint32]chan struct{} // matchtag -> stop
	subs    []string
	sent    int
	closed  bool
}

func (c *conn) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	for tag, stop := range c.streams {
		close(stop)
		delete(c.streams, tag)
	}
	c.mu.Unlock()
	c.nc.Close()
	c.b.inst().wake()
	c.b.mu.Lock()
	delete(c.b.conns, c)
	c.b.mu.Unlock()
}

func (c *conn) endStreams() {
	c.mu.Lock()
	tags := make([]uint32, 0, len(c.streams))
	for tag, stop := range c.streams {
		close(stop)
		delete(c.streams, tag)
		tags = append(tags, tag)
	}
	c.mu.Unlock()
	c.b.inst().wake()
	for _, tag := range tags {
		c.sendError("job-manager.events-journal", tag, syscall.ENODATA, "", true)
	}
}

func (c *conn) serve() {
	defer c.close()
	r := wire.NewReader(c.nc, 0)
	for {
		m, err := r.ReadMessage()
		if err != nil {
			return
		}
		if m.Type != wire.Request {
			continue
		}
		c.b.mu.Lock()
		c.b.requests = append(c.b.requests, Request{Topic: m.Topic, Payload: m.String(), Flags: m.Flags})
		c.b.mu.Unlock()
		switch m.Topic {
		case "job-manager.events-journal":
			c.journal(&m)
		case "job-manager.events-journal-cancel":
			c.cancel(&m)
		case "event.subscribe", "event.unsubscribe":
			var p struct {
				Topic string `json:"topic"`
			}
			if err := json.Unmarshal(m.JSON(), &p); err != nil || p.Topic == "" {
				c.sendError(m.Topic, m.Matchtag(), syscall.EPROTO, "", false)
				continue
			}
			c.mu.Lock()
			if m.Topic == "event.subscribe" {
				c.subs = append(c.subs, p.Topic)
			}
			c.mu.Unlock()
			c.send(&wire.Message{Type: wire.Response, Flags: wire.FlagTopic | wire.FlagRoute,
				UserID: wire.UserIDUnknown, Rolemask: 1, Aux2: m.Matchtag(), Topic: m.Topic})
		default:
			if m.Flags&wire.FlagNoResponse == 0 {
				c.sendError(m.Topic, m.Matchtag(), syscall.ENOSYS, "", false)
			}
		}
	}
}

func (c *conn) send(m *wire.Message) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wire.WriteMessage(c.nc, m) == nil
}

func (c *conn) sendError(topic string, tag uint32, errnum syscall.Errno, msg string, streaming bool) {
	m := wire.Message{Type: wire.Response, Flags: wire.FlagTopic | wire.FlagRoute,
		UserID: OwnerUserID, Rolemask: ownerRolemask, Aux1: uint32(errnum), Aux2: tag, Topic: topic}
	if streaming {
		m.Flags |= wire.FlagStreaming
	}
	if msg != "" {
		m.SetJSON([]byte(msg))
	}
	c.send(&m)
}

type journalRequest struct {
	Full  bool           `json:"full"`
	Allow map[string]int `json:"allow"`
	Deny  map[string]int `json:"deny"`
}

func (c *conn) journal(m *wire.Message) {
	tag := m.Matchtag()
	c.b.mu.Lock()
	refuse := c.b.refuse
	c.b.mu.Unlock()
	if refuse != nil {
		c.sendError(m.Topic, tag, refuse.errnum, refuse.msg, true)
		return
	}
	if m.Flags&wire.FlagStreaming == 0 {
		c.sendError(m.Topic, tag, syscall.EPROTO, "", false)
		return
	}
	var req journalRequest
	dec := json.NewDecoder(strings.NewReader(m.String()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		c.sendError(m.Topic, tag, syscall.EPROTO, "invalid request: "+err.Error(), true)
		return
	}
	// The backlog is taken at the position the request finds the
	// instance in, before the stream counts as open (Streams): a test
	// that waits for the stream and then moves the instance gets those
	// items live, never folded into the backlog.
	in := c.b.inst()
	in.mu.Lock()
	k := in.pos
	in.mu.Unlock()
	stop := make(chan struct{})
	c.mu.Lock()
	c.streams[tag] = stop
	c.mu.Unlock()
	c.b.wg.Add(1)
	go func() {
		defer c.b.wg.Done()
		c.stream(in, k, tag, req, stop)
	}()
}

func (req journalRequest) keep(name string) bool {
	if req.Allow != nil {
		if _, ok := req.Allow[name]; !ok {
			return false
		}
	}
	if _, denied := req.Deny[name]; denied {
		return false
	}
	return true
}

// stream sends the backlog at position k of in, the sentinel, then every
// item from k on as it happens.
func (c *conn) stream(in *Instance, k int, tag uint32, req journalRequest, stop chan struct{}) {
	respond := func(payload []byte) bool {
		m := wire.Message{Type: wire.Response, Flags: wire.FlagTopic | wire.FlagPayload | wire.FlagRoute | wire.FlagStreaming,
			UserID: OwnerUserID, Rolemask: ownerRolemask, Aux2: tag, Topic: "job-manager.events-journal"}
		m.SetJSON(payload)
		select {
		case <-stop:
			return false
		default:
		}
		if !c.send(&m) {
			return false
		}
		c.mu.Lock()
		c.sent++
		sent := c.sent
		c.mu.Unlock()
		c.b.mu.Lock()
		limit := c.b.closeAfter
		c.b.mu.Unlock()
		if limit > 0 && sent >= limit {
			c.close()
			return false
		}
		return true
	}
	for _, r := range in.Backlog(k, req.Full) {
		// A job whose events are all filtered out still gets a response.
		r.Events = filterEvents(r.Events, req)
		if !respond(mustJSON(r)) {
			return
		}
	}
	if !respond([]byte(`{"id":-1,"events":[]}`)) {
		return
	}
	for ; ; k++ {
		item, ok := in.wait(k, stop)
		if !ok {
			return
		}
		if item.Response == nil {
			c.event(item)
			continue
		}
		r := *item.Response
		r.Events = filterEvents(r.Events, req)
		if len(r.Events) == 0 {
			continue
		}
		if !respond(mustJSON(r)) {
			return
		}
	}
}

func filterEvents(evs []Event, req journalRequest) []Event {
	out := make([]Event, 0, len(evs))
	for _, e := range evs {
		if req.keep(e.Name) {
			out = append(out, e)
		}
	}
	return out
}

// event delivers a broker event to the connection if it subscribed.
func (c *conn) event(item Item) {
	c.mu.Lock()
	subscribed := false
	for _, s := range c.subs {
		if strings.HasPrefix(item.Topic, s) {
			subscribed = true
		}
	}
	c.mu.Unlock()
	if !subscribed {
		return
	}
	m := wire.Message{Type: wire.Event, Flags: wire.FlagTopic | wire.FlagPayload | wire.FlagRoute,
		UserID: OwnerUserID, Rolemask: ownerRolemask, Aux1: item.Seq, Route: []string{eventRoute}, Topic: item.Topic}
	m.SetJSON(item.Payload)
	c.send(&m)
}

func (c *conn) cancel(m *wire.Message) {
	var p struct {
		Matchtag *uint32 `json:"matchtag"`
	}
	if err := json.Unmarshal(m.JSON(), &p); err != nil || p.Matchtag == nil {
		return
	}
	c.mu.Lock()
	stop, ok := c.streams[*p.Matchtag]
	if ok {
		close(stop)
		delete(c.streams, *p.Matchtag)
	}
	c.mu.Unlock()
	if ok {
		c.b.inst().wake()
		c.sendError("job-manager.events-journal", *p.Matchtag, syscall.ENODATA, "", true)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("fluxtest: %v", err))
	}
	return b
}

// ErrStopped is returned by helpers once the broker is closed.
var ErrStopped = errors.New("fluxtest: broker stopped")
