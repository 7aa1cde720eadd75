package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/sources/flux/jobstate"
)

// tinyFixture is the sentinel and every response of the bulk fixture's
// first n jobs.
func tinyFixture(t *testing.T, n int) []byte {
	t.Helper()
	data, _, err := readFixture(filepath.Join("..", fixtureRel))
	if err != nil {
		t.Fatal(err)
	}
	keep := map[int64]bool{-1: true}
	var out bytes.Buffer
	for _, line := range bytes.Split(data, []byte("\n")) {
		// Every line starts {"id":N, (parseFixture checks that).
		num, _, _ := bytes.Cut(bytes.TrimPrefix(line, []byte(`{"id":`)), []byte(","))
		id, err := strconv.ParseInt(string(num), 10, 64)
		if err != nil {
			continue
		}
		if !keep[id] && len(keep) <= n {
			keep[id] = true
		}
		if keep[id] {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

func TestGenerateUniqueIDsAndReplays(t *testing.T) {
	const jobs, copies = 4, 3
	tmpl, err := parseFixture("tiny", tinyFixture(t, jobs))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "j.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := generate(f, tmpl, copies)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if info.Jobs != jobs*copies || info.Events != jobs*copies*11 {
		t.Fatalf("generated %d jobs, %d events; want %d, %d", info.Jobs, info.Events, jobs*copies, jobs*copies*11)
	}

	// Every line is JSON, the sentinel comes once, first; each copy has
	// ids of its own, and each copy's ids are the fixture's plus k<<37.
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var ids []int64
	for i, line := range lines {
		var r struct{ ID int64 }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if r.ID == -1 && i != 0 {
			t.Fatalf("sentinel on line %d", i+1)
		}
		ids = append(ids, r.ID)
	}
	lo := slices.Min(ids[1:])
	seen := map[int64]int{} // id -> copy
	var base []int64
	for _, id := range ids[1:] {
		k := int((id - lo) >> idShift) // the fixture's ids span less than 2^37
		r := struct{ ID int64 }{id}
		if c, ok := seen[r.ID]; ok && c != k {
			t.Fatalf("id %d in copies %d and %d", r.ID, c, k)
		}
		seen[r.ID] = k
		if k == 0 && !slices.Contains(base, r.ID) {
			base = append(base, r.ID)
		}
	}
	if len(seen) != jobs*copies || len(base) != jobs {
		t.Fatalf("%d distinct ids (%d in copy 0), want %d (%d)", len(seen), len(base), jobs*copies, jobs)
	}
	for _, id := range base {
		for k := range int64(copies) {
			if _, ok := seen[id+k<<idShift]; !ok {
				t.Errorf("copy %d lacks job %d+%d<<37", k, id, k)
			}
		}
	}

	// The replay source reads it: one record per event, every job.
	if err := verifyJournal(context.Background(), path, &info); err != nil {
		t.Fatal(err)
	}
	if info.ReplayJobs != jobs*copies || info.Records != info.Events {
		t.Fatalf("replay: %d jobs, %d records; want %d, %d", info.ReplayJobs, info.Records, jobs*copies, info.Events)
	}
}

func TestFixtureMentioningAnIDIsRefused(t *testing.T) {
	fx := "{\"id\":-1,\"events\":[]}\n" +
		"{\"id\":2220229656576,\"events\":[{\"timestamp\":1.5,\"name\":\"submit\"}]}\n" +
		"{\"id\":2220229656577,\"events\":[{\"timestamp\":2.5,\"name\":\"dependency-add\",\"context\":{\"description\":\"afterok:2220229656576\"}}]}\n"
	_, err := parseFixture("fx.jsonl", []byte(fx))
	if err == nil || !strings.Contains(err.Error(), "mentions job id 2220229656576") {
		t.Fatalf("err = %v", err)
	}
	f58 := strings.Replace(fx, "afterok:2220229656576", "afterok:ƒ"+jobstate.F58(2220229656576)[1:], 1)
	if _, err := parseFixture("fx.jsonl", []byte(f58)); err == nil {
		t.Fatal("an f58 id in a context was not refused")
	}
	if _, err := parseFixture("fx.jsonl", []byte("{\"events\":[]}\n")); err == nil || !strings.Contains(err.Error(), "fx.jsonl:1") {
		t.Fatalf("err = %v", err)
	}
}
