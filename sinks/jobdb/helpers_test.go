package jobdb_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/sinks/jobdb"
	"github.com/fluxstream/fluxstream/sources/replay"
)

const testdata = "../../testdata/flux"

// archive replays the journals (a list: each one a new stream) through a
// real pipeline into a jobdb sink at dbPath, and waits for the end.
func archive(t testing.TB, dbPath string, include string, journals ...string) {
	t.Helper()
	reg := core.NewRegistry()
	replay.Register(reg)
	jobdb.Register(reg)
	for i, j := range journals {
		if !strings.HasPrefix(j, "embedded:") && !filepath.IsAbs(j) {
			journals[i] = filepath.Join(testdata, j)
		}
	}
	if include == "" {
		include = "{jobspec: always, R: always, eventlog: always}"
	}
	yaml := fmt.Sprintf(`cluster: test
sources:
  src:
    type: replay
    path: [%s]
    user_lookup: none
    include: %s
sinks:
  db:
    type: jobdb
    inputs: [src]
    path: %s
    synchronous: normal
`, strings.Join(journals, ", "), include, dbPath)
	g := coretest.Build(t, reg, yaml)
	p := core.NewPipeline(g, core.RunOptions{DataDir: filepath.Join(filepath.Dir(dbPath), "state"), Logger: coretest.Quiet(), ShutdownTimeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

func open(t testing.TB, path string) *jobdb.DB {
	t.Helper()
	db, err := jobdb.Open(context.Background(), path, jobdb.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// shiftJournal writes a copy of a fixture journal with every timestamp
// moved by dt: the same job ids submitted later, as by an instance
// restarted without its KVS.
func shiftJournal(t testing.TB, src string, dt float64) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdata, src))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		if evs, ok := m["events"]; ok {
			var events []map[string]json.RawMessage
			if err := json.Unmarshal(evs, &events); err != nil {
				t.Fatal(err)
			}
			for _, e := range events {
				var ts float64
				json.Unmarshal(e["timestamp"], &ts)
				e["timestamp"] = json.RawMessage(fmt.Sprint(ts + dt))
			}
			m["events"], _ = json.Marshal(events)
		}
		line, _ := json.Marshal(m)
		out.Write(append(line, '\n'))
	}
	path := filepath.Join(t.TempDir(), "shifted-"+filepath.Base(src))
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
