package fluxtest

import (
	"encoding/json"
	"net"
	"path/filepath"
	"reflect"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/sources/flux/wire"
)

const testdata = "../../../testdata/flux"

func scenario(t *testing.T) *Instance {
	t.Helper()
	in, err := Scenario(testdata)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// normalize decodes a response so that backlogs compare by meaning (number
// formatting and job order aside).
func normalize(t *testing.T, rs []Response) map[int64]any {
	t.Helper()
	out := map[int64]any{}
	for _, r := range rs {
		var v any
		if err := json.Unmarshal(mustJSON(r), &v); err != nil {
			t.Fatal(err)
		}
		out[r.ID] = v
	}
	return out
}

func compareBacklogs(t *testing.T, got, want []Response) {
	t.Helper()
	g, w := normalize(t, got), normalize(t, want)
	if len(g) != len(w) {
		t.Fatalf("backlog has %d jobs, recorded one %d", len(g), len(w))
	}
	ids := make([]int64, 0, len(w))
	for id := range w {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	for _, id := range ids {
		if !reflect.DeepEqual(g[id], w[id]) {
			gb, _ := json.Marshal(g[id])
			wb, _ := json.Marshal(w[id])
			t.Errorf("job %d:\n got %s\nwant %s", id, gb, wb)
		}
	}
}

// The simulated instance produces, at the points where they were recorded,
// the same backlogs flux-core 0.88 sent.
func TestDerivedBacklogsMatchRecordings(t *testing.T) {
	in := scenario(t)
	before, _ := LoadBacklog(filepath.Join(testdata, "journal-backlog-full-before-purge.jsonl"))
	after, _ := LoadBacklog(filepath.Join(testdata, "journal-backlog-full-after-purge.jsonl"))
	purgeAt := in.PosAfterResponses(ScenarioPurgeAfter)
	if it := in.items[purgeAt]; it.Topic != "job-purge-inactive" {
		t.Fatalf("item %d is %+v, want the purge event", purgeAt, it)
	}
	t.Run("before purge", func(t *testing.T) { compareBacklogs(t, in.Backlog(purgeAt, true), before) })
	t.Run("after purge", func(t *testing.T) { compareBacklogs(t, in.Backlog(purgeAt+1, true), after) })

	// The full:false capture: the held job waiting in PRIORITY and the
	// running job after start.
	notFull, _ := LoadTimeline(filepath.Join(testdata, "journal-active-only-not-full.jsonl"))
	var want []Response
	for _, it := range notFull {
		if it.Response == nil {
			break
		}
		want = append(want, *it.Response)
		if len(want) == 2 {
			break
		}
	}
	k := -1
	for i := purgeAt; i < in.Len(); i++ {
		if r := in.items[i].Response; r != nil && r.ID == 1676228427776 && r.Events[0].Name == "start" {
			k = i + 1
		}
	}
	t.Run("active only", func(t *testing.T) { compareBacklogs(t, in.Backlog(k, false), want) })
}

type client struct {
	t  *testing.T
	nc net.Conn
	r  *wire.Reader
}

func dial(t *testing.T, b *Broker) *client {
	t.Helper()
	nc, err := net.Dial("unix", b.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	var hs [1]byte
	if _, err := nc.Read(hs[:]); err != nil || hs[0] != 0 {
		t.Fatalf("handshake byte %v, %v", hs[0], err)
	}
	return &client{t: t, nc: nc, r: wire.NewReader(nc, 0)}
}

func (c *client) request(topic, payload string, tag uint32, flags uint8) {
	m := wire.Message{Type: wire.Request, Flags: wire.FlagTopic | wire.FlagRoute | flags,
		UserID: wire.UserIDUnknown, Aux1: wire.NodeIDAny, Aux2: tag, Topic: topic}
	if payload != "" {
		m.SetJSON([]byte(payload))
	}
	if err := wire.WriteMessage(c.nc, &m); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) next() wire.Message {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := c.r.ReadMessage()
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// The broker speaks the recorded framing: the same flags, ids and payload
// shapes as the capture, backlog then sentinel then live, purge events to
// subscribers, ENODATA on cancel.
//
// Only what the broker promises is asserted about order: the responses of
// one stream come in order (backlog, sentinel, live). The response to
// event.subscribe is another RPC and may come anywhere among them, and a
// broker event travels apart from journal responses, so the purge event
// and the live response before it may arrive either way round. The test
// waits for the subscribe response before the purge happens: an event
// published before the subscription took effect is not delivered.
func TestBrokerProtocol(t *testing.T) {
	in := scenario(t)
	b, err := NewBroker(t.TempDir(), in)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	in.SeekTo(in.PosAfterResponses(ScenarioPurgeAfter) - 1) // just before the last response before the purge event
	c := dial(t, b)
	c.request("job-manager.events-journal", `{"full":true}`, 1, wire.FlagPayload|wire.FlagStreaming)
	c.request("event.subscribe", `{"topic": "job-purge-inactive"}`, 2, wire.FlagPayload)

	subscribed := false
	// take handles the subscribe response wherever it comes; it reports
	// whether m was something else.
	take := func(m wire.Message) bool {
		t.Helper()
		if m.Topic != "event.subscribe" {
			return true
		}
		if subscribed || m.Type != wire.Response || m.Errnum() != 0 || m.Matchtag() != 2 || m.Flags != 0x09 {
			t.Fatalf("subscribe response %+v (a second one: %v)", m, subscribed)
		}
		subscribed = true
		return false
	}
	checkJournal := func(m wire.Message) {
		t.Helper()
		if m.Type != wire.Response || m.Flags != 0x4b || m.UserID != OwnerUserID || m.Rolemask != 5 || m.Matchtag() != 1 || m.Errnum() != 0 {
			t.Fatalf("journal response header %+v", m)
		}
	}
	var backlog int
	for {
		m := c.next()
		if !take(m) {
			continue
		}
		checkJournal(m)
		if m.String() == `{"id":-1,"events":[]}` {
			break
		}
		backlog++
	}
	if backlog != 23 {
		t.Fatalf("backlog of %d jobs, want 23", backlog)
	}
	for !subscribed {
		if m := c.next(); take(m) {
			t.Fatalf("before the subscribe response, with nothing happening on the instance: %+v", m)
		}
	}
	in.Step(2) // the last response before the purge, then the purge
	var live, ev *wire.Message
	for live == nil || ev == nil {
		m := c.next()
		switch {
		case m.Type == wire.Event && ev == nil:
			ev = &m
		case m.Type == wire.Response && live == nil:
			checkJournal(m)
			live = &m
		default:
			t.Fatalf("unexpected message %+v", m)
		}
	}
	if want := `{"id":836797202432,"events":[{"timestamp":1795394528.834185,"name":"clean"}]}`; live.String() != want {
		t.Fatalf("live response %s, want %s", live.String(), want)
	}
	if ev.Topic != "job-purge-inactive" || ev.Seq() != ScenarioPurgeSeq || ev.Flags != 0x0b ||
		len(ev.Route) != 1 || ev.String() != `{"jobs":[349066756096,382369529856,389717950464,398844755968,412165865472,421728878592,438690643968,429664501760]}` {
		t.Fatalf("purge event %+v %q", ev, ev.String())
	}
	c.request("job-manager.events-journal-cancel", `{"matchtag": 1}`, 0, wire.FlagPayload|wire.FlagNoResponse)
	end := c.next()
	if end.Type != wire.Response || end.Errnum() != uint32(syscall.ENODATA) || end.Matchtag() != 1 || end.HasPayload() || end.Flags != 0x49 {
		t.Fatalf("end of stream %+v", end)
	}
}

func TestBrokerRefusesAndFilters(t *testing.T) {
	in := scenario(t)
	in.SeekTo(in.PosAfterResponses(ScenarioPurgeAfter))
	b, err := NewBroker(t.TempDir(), in)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	b.Refuse(syscall.EPERM, "Request requires owner credentials")
	c := dial(t, b)
	c.request("job-manager.events-journal", `{"full":true}`, 1, wire.FlagPayload|wire.FlagStreaming)
	m := c.next()
	if m.Errnum() != uint32(syscall.EPERM) || m.String() != "Request requires owner credentials" {
		t.Fatalf("refusal %+v %q", m, m.String())
	}
	b.Refuse(0, "")

	c.request("job-manager.events-journal", `{"full":true,"allow":{"submit":1,"finish":1,"clean":1}}`, 2, wire.FlagPayload|wire.FlagStreaming)
	var got []Response
	for {
		m := c.next()
		if m.String() == `{"id":-1,"events":[]}` {
			break
		}
		var r Response
		json.Unmarshal(m.JSON(), &r)
		got = append(got, r)
	}
	want, _ := LoadBacklog(filepath.Join(testdata, "journal-backlog-full-allow-submit-finish-clean.jsonl"))
	compareBacklogs(t, got, want)

	c.request("job-manager.events-journal", `{"full":true,"since":3}`, 3, wire.FlagPayload|wire.FlagStreaming)
	if m := c.next(); m.Errnum() != uint32(syscall.EPROTO) {
		t.Fatalf("unknown key accepted: %+v", m)
	}
	c.request("job-manager.nonesuch", `{}`, 4, wire.FlagPayload)
	if m := c.next(); m.Errnum() != uint32(syscall.ENOSYS) || m.Matchtag() != 4 {
		t.Fatalf("unknown topic: %+v", m)
	}
}

// An instance restart that reuses ids: the broker drops its clients and
// serves a new instance on the same socket; its backlog has the old job
// ids with new submit times (here: the recorded before-purge backlog, an
// hour later).
func TestInstanceRestartReusesIDs(t *testing.T) {
	in := scenario(t)
	b, err := NewBroker(t.TempDir(), in)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	in.SeekTo(in.Len())
	old := dial(t, b)
	old.request("job-manager.events-journal", `{"full":true}`, 1, wire.FlagPayload|wire.FlagStreaming)
	old.next()

	in2 := in.Reincarnate(3600)
	if in2.Pos() != 0 || in2.Len() != in.Len() {
		t.Fatalf("new instance at %d of %d", in2.Pos(), in2.Len())
	}
	in2.SeekTo(in2.PosAfterResponses(ScenarioPurgeAfter))
	if err := b.RestartWith(in2); err != nil {
		t.Fatal(err)
	}
	if b.Instance() != in2 {
		t.Fatal("broker serves the old instance")
	}
	// The old connection is gone.
	old.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := old.r.ReadMessage(); err != nil {
			break
		}
	}
	c := dial(t, b)
	c.request("job-manager.events-journal", `{"full":true}`, 1, wire.FlagPayload|wire.FlagStreaming)
	var got []Response
	for {
		m := c.next()
		if m.String() == `{"id":-1,"events":[]}` {
			break
		}
		var r Response
		json.Unmarshal(m.JSON(), &r)
		got = append(got, r)
	}
	want, _ := LoadBacklog(filepath.Join(testdata, "journal-backlog-full-before-purge.jsonl"))
	for i := range want {
		want[i].Events = shiftEvents(want[i].Events, 3600)
	}
	compareBacklogs(t, got, want)
	// The first instance is untouched.
	if in.Items()[0].Response.Events[0].Timestamp+3600 != in2.Items()[0].Response.Events[0].Timestamp {
		t.Fatal("timestamps not moved by an hour")
	}
}
