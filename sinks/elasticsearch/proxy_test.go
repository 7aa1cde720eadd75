package elasticsearch

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fault is what the proxy does to one bulk request.
type fault string

const (
	pass        fault = ""
	fail429     fault = "429"          // the whole request, not forwarded
	fail500     fault = "500"          // not forwarded
	fail413     fault = "413"          // not forwarded, if more than one action
	resetBefore fault = "reset-before" // connection reset, not forwarded
	resetAfter  fault = "reset-after"  // forwarded (applied!), then reset: the answer is lost
	stall       fault = "stall"        // held until the client gives up, not forwarded
	items429    fault = "items-429"    // forwarded; every other item's answer turned into a 429 rejection
	items503    fault = "items-503"    // forwarded; every third item's answer turned into a 503
)

// proxy is a loopback HTTP proxy in front of the real node that injects
// faults into _bulk requests from a plan, and optionally adds
// X-Elastic-Product: Elasticsearch to every answer.
type proxy struct {
	t       testing.TB
	target  string
	elastic bool
	srv     *httptest.Server

	mu    sync.Mutex
	plan  []fault
	seen  map[fault]int
	bulks int
}

func newProxy(t testing.TB, target string, elastic bool, plan ...fault) *proxy {
	p := &proxy{t: t, target: target, elastic: elastic, plan: plan, seen: map[fault]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *proxy) URL() string { return p.srv.URL }

func (p *proxy) next(r *http.Request, body []byte) fault {
	if !strings.Contains(r.URL.Path, "_bulk") {
		return pass
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bulks++
	if len(p.plan) == 0 {
		return pass
	}
	f := p.plan[0]
	p.plan = p.plan[1:]
	if f == fail413 && bytes.Count(body, []byte("\n")) <= 2 {
		p.plan = append([]fault{f}, p.plan...) // keep it for a bigger one
		return pass
	}
	p.seen[f]++
	return f
}

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f := p.next(r, body)
	switch f {
	case fail429:
		p.answer(w, 429, `{"error":{"type":"es_rejected_execution_exception","reason":"rejected execution (proxy)"},"status":429}`)
		return
	case fail500:
		p.answer(w, 500, `{"error":{"type":"exception","reason":"proxy 500"},"status":500}`)
		return
	case fail413:
		p.answer(w, 413, ``)
		return
	case resetBefore:
		reset(w)
		return
	case stall:
		<-r.Context().Done()
		return
	}
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	req.Header = r.Header.Clone()
	req.Header.Del("Accept-Encoding") // answers the proxy can read
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		reset(w)
		return
	}
	defer res.Body.Close()
	rb, _ := io.ReadAll(res.Body)
	switch f {
	case resetAfter:
		reset(w)
		return
	case items429, items503:
		rb = rewriteItems(p.t, rb, f)
	}
	for k, v := range res.Header {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length")
	if p.elastic {
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
	}
	w.WriteHeader(res.StatusCode)
	w.Write(rb)
}

func (p *proxy) answer(w http.ResponseWriter, status int, body string) {
	if p.elastic {
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// reset closes the client's connection with a TCP RST.
func reset(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// rewriteItems replaces the answers of some items (already applied) by
// retryable errors, as a node whose acknowledgement was lost would.
func rewriteItems(t testing.TB, body []byte, f fault) []byte {
	var br map[string]any
	if err := json.Unmarshal(body, &br); err != nil {
		t.Errorf("proxy: bulk answer: %v", err)
		return body
	}
	items, _ := br["items"].([]any)
	for i, it := range items {
		m := it.(map[string]any)
		for action, v := range m {
			r := v.(map[string]any)
			switch {
			case f == items429 && i%2 == 0:
				m[action] = map[string]any{"status": 429, "error": map[string]any{"type": "es_rejected_execution_exception", "reason": "rejected (proxy)"}}
			case f == items503 && i%3 == 0:
				m[action] = map[string]any{"status": 503, "error": map[string]any{"type": "unavailable_shards_exception", "reason": "primary shard is not active (proxy)"}}
			default:
				_ = r
			}
		}
	}
	br["errors"] = true
	out, _ := json.Marshal(br)
	return out
}
