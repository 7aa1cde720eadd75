// Package fluxtest is a Flux broker for tests: it listens on a unix socket,
// speaks the local:// connector's wire protocol (package wire), and plays
// a simulated instance built from a recorded live journal.
//
// The Instance replays the recorded timeline (journal responses and
// job-purge-inactive events) one item at a time. A consumer that connects
// when the instance is at position k gets what flux-core 0.88 would send:
// the backlog at k (each job's committed eventlog, current jobspec and R;
// live-only events left out; invalidated and purged jobs absent), the
// sentinel, then the live items from k on.
package fluxtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
)

// Item is one step of the timeline: a journal response or a broker event.
type Item struct {
	Response *Response // journal response, or nil
	Topic    string    // broker event topic, when Response is nil
	Payload  json.RawMessage
	Seq      uint32 // broker event sequence number
}

// Response is a journal response as recorded.
type Response struct {
	ID      int64           `json:"id"`
	Events  []Event         `json:"events"`
	Jobspec json.RawMessage `json:"jobspec,omitempty"`
	R       json.RawMessage `json:"R,omitempty"`
}

// Event is one eventlog entry. Context is kept as recorded.
type Event struct {
	Timestamp float64         `json:"timestamp"`
	Name      string          `json:"name"`
	Context   json.RawMessage `json:"context,omitempty"`
}

// Instance is a simulated Flux instance moving along a recorded timeline.
type Instance struct {
	items     []Item
	reference map[int64]map[eventKey]Event // committed events per job, if known

	mu   sync.Mutex
	pos  int // items[:pos] have happened
	cond *sync.Cond
}

type eventKey struct {
	name string
	ts   float64
}

// LoadTimeline reads a recorded stream (JSONL, plain or gzip): journal
// response lines and broker event lines {"topic":...,"payload":...}. A
// leading sentinel (a full:true stream opened on an empty instance) is
// skipped: the broker makes its own.
func LoadTimeline(path string) ([]Item, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		r = zr
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	var items []Item
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if bytes.Contains(b, []byte(`"topic"`)) && !bytes.HasPrefix(b, []byte(`{"id"`)) {
			var ev struct {
				Topic   string          `json:"topic"`
				Seq     uint32          `json:"seq"`
				Payload json.RawMessage `json:"payload"`
			}
			if err := json.Unmarshal(b, &ev); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, line, err)
			}
			items = append(items, Item{Topic: ev.Topic, Payload: compact(ev.Payload), Seq: ev.Seq})
			continue
		}
		var resp Response
		if err := json.Unmarshal(b, &resp); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if resp.ID == -1 {
			continue
		}
		items = append(items, Item{Response: &resp})
	}
	return items, sc.Err()
}

// LoadBacklog reads a recorded full backlog (up to its sentinel).
func LoadBacklog(path string) ([]Response, error) {
	items, err := LoadTimeline(path)
	if err != nil {
		return nil, err
	}
	out := make([]Response, 0, len(items))
	for _, it := range items {
		if it.Response != nil {
			out = append(out, *it.Response)
		}
	}
	return out, nil
}

// InsertEvent puts a broker event into the timeline after the first n
// journal responses.
func InsertEvent(items []Item, n int, topic string, seq uint32, payload json.RawMessage) []Item {
	count := 0
	for i, it := range items {
		if count == n {
			out := append([]Item{}, items[:i]...)
			out = append(out, Item{Topic: topic, Seq: seq, Payload: compact(payload)})
			return append(out, items[i:]...)
		}
		if it.Response != nil {
			count++
		}
	}
	return append(items, Item{Topic: topic, Seq: seq, Payload: compact(payload)})
}

// compact strips the spaces a recorder may have added: brokers send
// compact JSON.
func compact(b json.RawMessage) json.RawMessage {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

// NewInstance returns an instance at the start of the timeline. reference,
// if given, is a recorded full backlog: it tells which live events were
// committed to the KVS eventlog (a volatile memo is not). Without it, only
// annotations and invalidate are taken as live-only.
func NewInstance(items []Item, reference []Response) *Instance {
	in := &Instance{items: items}
	in.cond = sync.NewCond(&in.mu)
	if reference != nil {
		in.reference = map[int64]map[eventKey]Event{}
		for _, r := range reference {
			m := map[eventKey]Event{}
			for _, e := range r.Events {
				m[eventKey{e.Name, e.Timestamp}] = e
			}
			in.reference[r.ID] = m
		}
	}
	return in
}

// Len is the number of items in the timeline.
func (in *Instance) Len() int { return len(in.items) }

// Pos is how many items have happened.
func (in *Instance) Pos() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.pos
}

// Step makes the next n items happen (fewer at the end). It returns the
// new position.
func (in *Instance) Step(n int) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.pos = min(in.pos+n, len(in.items))
	in.cond.Broadcast()
	return in.pos
}

// SeekTo moves to position k (items[:k] have happened).
func (in *Instance) SeekTo(k int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.pos = max(0, min(k, len(in.items)))
	in.cond.Broadcast()
}

// PosAfterResponses returns the position just after the n-th journal
// response of the timeline.
func (in *Instance) PosAfterResponses(n int) int {
	count := 0
	for i, it := range in.items {
		if it.Response != nil {
			count++
			if count == n {
				return i + 1
			}
		}
	}
	return len(in.items)
}

// wait blocks until pos > k or stop closes; it returns the item at k.
func (in *Instance) wait(k int, stop <-chan struct{}) (Item, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for in.pos <= k {
		select {
		case <-stop:
			return Item{}, false
		default:
		}
		in.cond.Wait()
	}
	return in.items[k], true
}

// wake unblocks waiters (so they can see their stop channel).
func (in *Instance) wake() {
	in.mu.Lock()
	in.cond.Broadcast()
	in.mu.Unlock()
}

// LiveOnly reports whether an event of job id is never committed to the
// KVS eventlog (so never in a backlog).
func (in *Instance) LiveOnly(id int64, e Event) bool {
	if e.Name == "annotations" || e.Name == "invalidate" {
		return true
	}
	if ref, ok := in.reference[id]; ok {
		_, committed := ref[eventKey{e.Name, e.Timestamp}]
		return !committed
	}
	return false
}

// committed returns the event as the job-manager keeps it for backlogs.
// That can differ from the live one: 0.88 merges a later volatile memo
// into the stored memo event's context.
func (in *Instance) committed(id int64, e Event) Event {
	if ref, ok := in.reference[id]; ok {
		if re, ok := ref[eventKey{e.Name, e.Timestamp}]; ok {
			return re
		}
	}
	return e
}

// Backlog computes what a full (or active-only) backlog holds at position
// k: inactive jobs first, then active ones, each by id.
func (in *Instance) Backlog(k int, full bool) []Response {
	type jobAcc struct {
		id       int64
		events   []Event
		jobspec  map[string]any
		r        map[string]any
		invalid  bool
		inactive bool
	}
	jobs := map[int64]*jobAcc{}
	var order []int64
	for _, it := range in.items[:k] {
		if it.Response == nil {
			if it.Topic == "job-purge-inactive" {
				var p struct {
					Jobs []int64 `json:"jobs"`
				}
				json.Unmarshal(it.Payload, &p)
				for _, id := range p.Jobs {
					delete(jobs, id)
				}
			}
			continue
		}
		r := it.Response
		j := jobs[r.ID]
		if j == nil {
			j = &jobAcc{id: r.ID}
			jobs[r.ID] = j
			order = append(order, r.ID)
		}
		if len(r.Jobspec) > 0 {
			json.Unmarshal(r.Jobspec, &j.jobspec)
		}
		if len(r.R) > 0 {
			json.Unmarshal(r.R, &j.r)
		}
		for _, e := range r.Events {
			switch e.Name {
			case "invalidate":
				j.invalid = true
			case "clean":
				j.inactive = true
			case "jobspec-update":
				applyUpdate(j.jobspec, e.Context, "")
			case "resource-update":
				if j.r != nil {
					exec, _ := j.r["execution"].(map[string]any)
					applyUpdate(exec, e.Context, "")
				}
			}
			if !in.LiveOnly(r.ID, e) {
				j.events = append(j.events, in.committed(r.ID, e))
			}
		}
	}
	var inactive, active []Response
	for _, id := range order {
		j := jobs[id]
		if j == nil || j.invalid {
			continue
		}
		resp := Response{ID: id, Events: j.events}
		resp.Jobspec, _ = json.Marshal(j.jobspec)
		if j.r != nil {
			resp.R, _ = json.Marshal(j.r)
		}
		if j.inactive {
			inactive = append(inactive, resp)
		} else {
			active = append(active, resp)
		}
	}
	byID := func(rs []Response) {
		sort.Slice(rs, func(a, b int) bool { return rs[a].ID < rs[b].ID })
	}
	byID(inactive)
	byID(active)
	if !full {
		return active
	}
	return append(inactive, active...)
}

// applyUpdate sets each dotted key of ctx (e.g. "attributes.system.duration")
// in m, as the job-manager does for jobspec-update and resource-update.
func applyUpdate(m map[string]any, ctx json.RawMessage, _ string) {
	if m == nil || len(ctx) == 0 {
		return
	}
	var upd map[string]any
	if json.Unmarshal(ctx, &upd) != nil {
		return
	}
	for key, v := range upd {
		parts := strings.Split(key, ".")
		cur := m
		for _, p := range parts[:len(parts)-1] {
			next, ok := cur[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[p] = next
			}
			cur = next
		}
		cur[parts[len(parts)-1]] = v
	}
}

// PosAfterEvent returns the position just after the response that holds
// the named event of job id (or -1).
func (in *Instance) PosAfterEvent(id int64, name string) int {
	for i, it := range in.items {
		if it.Response != nil && it.Response.ID == id {
			for _, e := range it.Response.Events {
				if e.Name == name {
					return i + 1
				}
			}
		}
	}
	return -1
}

// Streams is the number of journal streams being served.
func (b *Broker) Streams() int {
	n := 0
	for _, c := range b.connections() {
		c.mu.Lock()
		n += len(c.streams)
		c.mu.Unlock()
	}
	return n
}

// Reincarnate returns a new instance at the start of the same timeline
// with every event timestamp moved by dt seconds: what a Flux instance
// restarted without its old KVS (a fresh instance on the same socket, or a
// crash of one whose statedir was saved only at a clean stop) looks like
// when it runs the same jobs again. Its job ids are the old instance's,
// its submit times are not. Contexts, jobspecs and R are kept as they are.
func (in *Instance) Reincarnate(dt float64) *Instance {
	items := make([]Item, len(in.items))
	for i, it := range in.items {
		items[i] = it
		if it.Response != nil {
			r := *it.Response
			r.Events = shiftEvents(r.Events, dt)
			items[i].Response = &r
		}
	}
	n := &Instance{items: items}
	n.cond = sync.NewCond(&n.mu)
	if in.reference != nil {
		n.reference = map[int64]map[eventKey]Event{}
		for id, evs := range in.reference {
			m := make(map[eventKey]Event, len(evs))
			for k, e := range evs {
				e.Timestamp += dt
				m[eventKey{k.name, k.ts + dt}] = e
			}
			n.reference[id] = m
		}
	}
	return n
}

func shiftEvents(evs []Event, dt float64) []Event {
	out := make([]Event, len(evs))
	for i, e := range evs {
		e.Timestamp += dt
		out[i] = e
	}
	return out
}

// Items returns the timeline (not to be modified).
func (in *Instance) Items() []Item { return in.items }
