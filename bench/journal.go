package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/sources/flux/jobstate"
	"github.com/fluxstream/fluxstream/sources/replay"
)

// fixtureRel is the bulk journal the bench journals are made of: the live
// stream of 2000 `true` jobs, 11 events each (testdata/flux/README.md).
const fixtureRel = "testdata/flux/journal-bulk2000-live.jsonl.gz"

// idShift separates the copies: the recorded ids span about 61 x 2^30,
// so copy k adds k<<37 and no two copies share an id.
const idShift = 37

// genVersion changes the cache key when the generator's output changes.
const genVersion = "1"

// journalInfo describes a generated journal; it is cached next to it.
type journalInfo struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	Copies  int    `json:"copies"`
	Lines   int    `json:"lines"`
	Events  int    `json:"events"` // events in the journal's responses
	Jobs    int    `json:"jobs"`   // distinct job ids written
	Probe   uint64 `json:"probe"`  // the last job of the last copy: looked for in every output
	Records int    `json:"records"`
	// ReplayJobs is what the replay source found: distinct jobs in its
	// records (must equal Jobs).
	ReplayJobs int `json:"replay_jobs"`
}

// template is one fixture line split around its job id.
type template struct {
	id     int64 // -1 for the sentinel
	rest   []byte
	events int
}

// parseFixture splits every line of a journal into its leading job id and
// the rest, and refuses lines that mention a job id anywhere else (in
// decimal or f58 form): the generator shifts only the leading one, so
// such a line would point at the wrong job in every copy but the first.
func parseFixture(name string, data []byte) ([]template, error) {
	var out []template
	ids := map[string]bool{}
	for n, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var resp struct {
			ID     *int64            `json:"id"`
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, n+1, err)
		}
		if resp.ID == nil {
			return nil, fmt.Errorf("%s:%d: not a journal response (no \"id\"); the generator handles responses only", name, n+1)
		}
		const head = `{"id":`
		num := strconv.FormatInt(*resp.ID, 10)
		if !bytes.HasPrefix(line, []byte(head+num)) {
			return nil, fmt.Errorf("%s:%d: the line does not start with %s%s", name, n+1, head, num)
		}
		if *resp.ID < 0 && *resp.ID != -1 {
			return nil, fmt.Errorf("%s:%d: negative job id %d", name, n+1, *resp.ID)
		}
		if *resp.ID >= 0 {
			ids[num] = true
			f := jobstate.F58(uint64(*resp.ID))
			ids[f] = true
			ids[f[1:]] = true // without the ASCII f, as after a 'ƒ'
		}
		out = append(out, template{id: *resp.ID, rest: bytes.Clone(line[len(head)+len(num):]), events: len(resp.Events)})
	}
	for i, t := range out {
		if tok := mentionsID(t.rest, ids); tok != "" {
			return nil, fmt.Errorf("%s: response %d (job %d) mentions job id %s outside its \"id\"; the generator would have to shift it too", name, i+1, t.id, tok)
		}
	}
	return out, nil
}

// mentionsID returns the first alphanumeric token of b that is in ids.
func mentionsID(b []byte, ids map[string]bool) string {
	start := -1
	for i := 0; i <= len(b); i++ {
		alnum := i < len(b) && (b[i] >= '0' && b[i] <= '9' || b[i] >= 'a' && b[i] <= 'z' || b[i] >= 'A' && b[i] <= 'Z')
		switch {
		case alnum && start < 0:
			start = i
		case !alnum && start >= 0:
			if tok := string(b[start:i]); ids[tok] {
				return tok
			}
			start = -1
		}
	}
	return ""
}

// generate writes copies of the fixture's responses to w, copy k with
// every job id shifted by k<<idShift; the sentinel (id -1) comes once, in
// copy 0, where the fixture has it.
func generate(w io.Writer, tmpl []template, copies int) (journalInfo, error) {
	info := journalInfo{Copies: copies}
	var lo, hi int64 = -1, -1
	for _, t := range tmpl {
		if t.id < 0 {
			continue
		}
		if lo < 0 || t.id < lo {
			lo = t.id
		}
		hi = max(hi, t.id)
	}
	if lo < 0 {
		return info, errors.New("the fixture has no job")
	}
	if hi-lo >= 1<<idShift {
		return info, fmt.Errorf("the fixture's ids span %d, more than the shift 2^%d: copies would collide", hi-lo, idShift)
	}
	if uint64(hi)+uint64(copies-1)<<idShift >= 1<<63 {
		return info, fmt.Errorf("%d copies overflow a job id", copies)
	}
	jobs := map[int64]bool{}
	for _, t := range tmpl {
		if t.id >= 0 {
			jobs[t.id] = true
		}
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var num []byte
	for k := range copies {
		for _, t := range tmpl {
			if t.id < 0 && k > 0 {
				continue
			}
			id := t.id
			if id >= 0 {
				id += int64(k) << idShift
				info.Probe = uint64(id)
			}
			bw.WriteString(`{"id":`)
			num = strconv.AppendInt(num[:0], id, 10)
			bw.Write(num)
			bw.Write(t.rest)
			bw.WriteByte('\n')
			info.Lines++
			info.Events += t.events
		}
	}
	info.Jobs = len(jobs) * copies
	return info, bw.Flush()
}

// readFixture returns the decompressed fixture and a hash of its bytes.
func readFixture(path string) ([]byte, string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(raw)
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return data, hex.EncodeToString(sum[:]), nil
}

// ensureJournal returns the journal of copies copies of the fixture,
// generating and verifying it unless the cache has it.
func ensureJournal(ctx context.Context, cacheDir, fixture string, copies int, logf func(string, ...any)) (journalInfo, error) {
	data, sum, err := readFixture(fixture)
	if err != nil {
		return journalInfo{}, err
	}
	key := sha256.Sum256([]byte(sum + "\x00" + genVersion + "\x00" + strconv.Itoa(copies)))
	base := filepath.Join(cacheDir, fmt.Sprintf("journal-%dx-%s", copies, hex.EncodeToString(key[:6])))
	path, meta := base+".jsonl", base+".json"
	if info, ok := cached(path, meta); ok {
		logf("journal %s (cached): %d events, %d jobs", path, info.Events, info.Jobs)
		return info, nil
	}
	tmpl, err := parseFixture(fixture, data)
	if err != nil {
		return journalInfo{}, err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return journalInfo{}, err
	}
	logf("generating %s (%d copies of %s)", path, copies, fixture)
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return journalInfo{}, err
	}
	info, err := generate(f, tmpl, copies)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return journalInfo{}, err
	}
	logf("verifying it with the replay source")
	if err := verifyJournal(ctx, tmp, &info); err != nil {
		os.Remove(tmp)
		return journalInfo{}, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return journalInfo{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return journalInfo{}, err
	}
	info.Path, info.Size = path, st.Size()
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := os.WriteFile(meta, b, 0o644); err != nil {
		return journalInfo{}, err
	}
	return info, nil
}

func cached(path, meta string) (journalInfo, bool) {
	var info journalInfo
	b, err := os.ReadFile(meta)
	if err != nil || json.Unmarshal(b, &info) != nil {
		return info, false
	}
	st, err := os.Stat(path)
	if err != nil || st.Size() != info.Size || info.Path != path {
		return info, false
	}
	return info, true
}

// verifyJournal replays path with the replay source (no checkpoint, no
// user lookup) and checks it yields one event record per event and
// info.Jobs distinct jobs; it fills Records and ReplayJobs.
func verifyJournal(ctx context.Context, path string, info *journalInfo) error {
	nc, err := core.ParseNodeConfig(core.KindSource, "journal",
		fmt.Appendf(nil, "type: replay\npath: [%q]\ncheckpoint: false\nuser_lookup: none\n", path))
	if err != nil {
		return err
	}
	src, err := replay.New(nc)
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := src.(core.Provisioner).Provision(ctx, core.NodeContext{Name: "journal", Kind: core.KindSource, Logger: quiet}); err != nil {
		return err
	}
	defer src.(io.Closer).Close()
	c := &counter{jobs: map[uint64]struct{}{}}
	if err := src.Run(ctx, c); err != nil {
		return fmt.Errorf("replay %s: %w", path, err)
	}
	if c.other > 0 {
		return fmt.Errorf("replay %s: %d records that are not events (first: %s)", path, c.other, c.firstOther)
	}
	info.Records, info.ReplayJobs = c.events, len(c.jobs)
	if c.events != info.Events {
		return fmt.Errorf("replay %s: %d event records, the journal has %d events", path, c.events, info.Events)
	}
	if len(c.jobs) != info.Jobs {
		return fmt.Errorf("replay %s: %d distinct jobs, generated %d", path, len(c.jobs), info.Jobs)
	}
	if _, ok := c.jobs[info.Probe]; !ok {
		return fmt.Errorf("replay %s: no record of job %d (the last one written)", path, info.Probe)
	}
	return nil
}

// counter is an Emitter that counts what the source emits.
type counter struct {
	events, other int
	firstOther    string
	jobs          map[uint64]struct{}
}

func (c *counter) Emit(_ context.Context, recs []*core.Record, ack func()) error {
	for _, r := range recs {
		if r.Kind != core.KindEvent {
			if c.other == 0 {
				c.firstOther = string(r.Kind) + " " + r.ID
			}
			c.other++
			continue
		}
		c.events++
		c.jobs[r.JobID()] = struct{}{}
	}
	ack()
	return nil
}
