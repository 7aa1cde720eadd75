package flux_test

import (
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"

	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
	"github.com/fluxstream/fluxstream/sources/flux/jobstate"
	"github.com/fluxstream/fluxstream/sources/flux/wire"
)

// jobListBroker is a test-only extension of the fluxtest broker: a
// unix-socket front that passes every message through to the broker
// (real wire protocol both ways) and answers job-list.list itself, as
// flux-core 0.88's job-list module does (src/modules/job-list/list.c:
// list_cb), from the simulated instance's live journal at the time of the
// request.
type jobListBroker struct {
	Path     string
	upstream string
	in       *fluxtest.Instance
	items    []fluxtest.Item // the instance's timeline

	mu       sync.Mutex
	requests []fluxtest.Request
	refuse   syscall.Errno // answer job-list.list with this error (ENOSYS: module not loaded)
	ln       net.Listener
	wg       sync.WaitGroup
}

func startJobList(t *testing.T, b *fluxtest.Broker, in *fluxtest.Instance) *jobListBroker {
	t.Helper()
	items, err := fluxtest.LoadTimeline(filepath.Join(testdata, "journal-scenario-live-full.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	// The same timeline as fluxtest.Scenario: the purge event in place
	// (positions must agree with the instance's).
	items = fluxtest.InsertEvent(items, fluxtest.ScenarioPurgeAfter, "job-purge-inactive", fluxtest.ScenarioPurgeSeq, json.RawMessage(`{"jobs":[]}`))
	if len(items) != in.Len() {
		t.Fatalf("timeline has %d items, the instance %d", len(items), in.Len())
	}
	jl := &jobListBroker{Path: filepath.Join(t.TempDir(), "local"), upstream: b.Path, in: in, items: items}
	ln, err := net.Listen("unix", jl.Path)
	if err != nil {
		t.Fatal(err)
	}
	jl.ln = ln
	jl.wg.Add(1)
	go jl.accept()
	t.Cleanup(func() {
		ln.Close()
		jl.wg.Wait()
	})
	return jl
}

func (jl *jobListBroker) URI() string { return "local://" + jl.Path }

func (jl *jobListBroker) Requests() []fluxtest.Request {
	jl.mu.Lock()
	defer jl.mu.Unlock()
	return append([]fluxtest.Request(nil), jl.requests...)
}

func (jl *jobListBroker) Refuse(errnum syscall.Errno) {
	jl.mu.Lock()
	jl.refuse = errnum
	jl.mu.Unlock()
}

func (jl *jobListBroker) accept() {
	defer jl.wg.Done()
	for {
		client, err := jl.ln.Accept()
		if err != nil {
			return
		}
		jl.wg.Add(1)
		go func() {
			defer jl.wg.Done()
			jl.serve(client)
		}()
	}
}

func (jl *jobListBroker) serve(client net.Conn) {
	defer client.Close()
	up, err := net.Dial("unix", jl.upstream)
	if err != nil {
		return // the broker is down: the client sees no handshake
	}
	defer up.Close()
	var hs [1]byte
	if _, err := io.ReadFull(up, hs[:]); err != nil {
		return
	}
	if _, err := client.Write(hs[:]); err != nil || hs[0] != 0 {
		return
	}
	var wmu sync.Mutex // client writes: broker responses and ours
	write := func(m *wire.Message) error {
		wmu.Lock()
		defer wmu.Unlock()
		return wire.WriteMessage(client, m)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := wire.NewReader(up, 0)
		for {
			m, err := r.ReadMessage()
			if err != nil || write(&m) != nil {
				client.Close()
				return
			}
		}
	}()
	r := wire.NewReader(client, 0)
	for {
		m, err := r.ReadMessage()
		if err != nil {
			break
		}
		if m.Type == wire.Request && m.Topic == "job-list.list" {
			jl.list(&m, write)
			continue
		}
		if wire.WriteMessage(up, &m) != nil {
			break
		}
	}
	up.Close()
	<-done
}

// list answers job-list.list {"max_entries":0,"attrs":["annotations"],
// "constraint":{"states":["active"]}}: streaming, one job per response,
// then ENODATA (list.c:list_cb).
func (jl *jobListBroker) list(m *wire.Message, write func(*wire.Message) error) {
	jl.mu.Lock()
	jl.requests = append(jl.requests, fluxtest.Request{Topic: m.Topic, Payload: m.String(), Flags: m.Flags})
	refuse := jl.refuse
	jl.mu.Unlock()
	resp := func(errnum syscall.Errno, payload []byte) *wire.Message {
		r := &wire.Message{Type: wire.Response, Flags: wire.FlagTopic | wire.FlagRoute | wire.FlagStreaming,
			UserID: fluxtest.OwnerUserID, Rolemask: 5, Aux1: uint32(errnum), Aux2: m.Matchtag(), Topic: m.Topic}
		if payload != nil {
			r.Flags |= wire.FlagPayload
			r.SetJSON(payload)
		}
		return r
	}
	if refuse != 0 {
		write(resp(refuse, nil))
		return
	}
	var req struct {
		MaxEntries *int            `json:"max_entries"`
		Attrs      []string        `json:"attrs"`
		Constraint json.RawMessage `json:"constraint"`
	}
	if err := json.Unmarshal(m.JSON(), &req); err != nil || req.MaxEntries == nil || req.Attrs == nil ||
		string(req.Constraint) != `{"states":["active"]}` || len(req.Attrs) != 1 || req.Attrs[0] != "annotations" {
		write(resp(syscall.EPROTO, []byte("invalid payload: this test broker answers only the request the flux source sends")))
		return
	}
	for i, j := range jl.activeAnnotations(jl.in.Pos()) {
		o := map[string]any{"id": j.id}
		if j.annotations != nil {
			o["annotations"] = j.annotations
		}
		p := map[string]any{"jobs": []any{o}}
		if i == 0 {
			p["version"] = 1
		}
		b, _ := json.Marshal(p)
		if write(resp(0, b)) != nil {
			return
		}
	}
	write(resp(syscall.ENODATA, nil))
}

type jobAnnotations struct {
	id          uint64
	annotations json.RawMessage
}

// activeAnnotations is what job-list holds at position k: every active job
// (not NEW, not INACTIVE, not invalidated) with the annotations its live
// journal gave it (annotations events, memos merged into user), by id.
func (jl *jobListBroker) activeAnnotations(k int) []jobAnnotations {
	states := map[int64]*jobstate.State{}
	for _, it := range jl.items[:k] {
		if it.Response == nil {
			continue
		}
		b, _ := json.Marshal(it.Response)
		r, err := jobstate.ParseResponse(b)
		if err != nil {
			panic(err)
		}
		st := states[r.ID]
		if st == nil {
			st = jobstate.New(uint64(r.ID))
			states[r.ID] = st
		}
		for _, e := range r.Events {
			st.Apply(e)
		}
	}
	var out []jobAnnotations
	for id, st := range states {
		snap := st.Snapshot()
		if st.Invalidated() || snap.State == "" || snap.State == "NEW" || snap.State == "INACTIVE" {
			continue
		}
		out = append(out, jobAnnotations{uint64(id), snap.Annotations})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].id < out[b].id })
	return out
}
