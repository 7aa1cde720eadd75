package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/hamba/avro/v2/ocf"

	"github.com/fluxstream/fluxstream/internal/kafkatest/apache"
	"github.com/fluxstream/fluxstream/schemas/avrorec"
)

var workloadKeys = []string{"file", "kafka", "kafka-apache", "anonymize", "scale"}

// workload is one line of comparison: variants run paired and
// interleaved, rep by rep, then checked against targets.
type workload struct {
	key, title string
	large      bool // the 11M journal
	sample     bool // VmRSS every second
	variants   []variant
	// peer, when set, starts the Kafka cluster the group produces to.
	peer    func(ctx context.Context) (kafkaPeer, error)
	targets func(s map[string]*summary) []check
}

type variant struct {
	name string
	// kind: "flux" (fluxstream run -c), "naive" (naive.py), "producer"
	// (producer.py).
	kind string
	// config returns fluxstream's YAML for a run in dir.
	config func(dir string, rc runCtx) (string, error)
	// out is how the run's output is read: "json", "avro", "naive" or
	// "kafka".
	out string
}

// runCtx is what one run needs beyond its directory.
type runCtx struct {
	journal string
	brokers []string
	topic   string
}

type check struct {
	on     string // the variant it judges
	what   string // the target, with the measured figure
	ok     bool
	absent bool // could not be judged (a run failed)
}

// summary is one variant's medians over its reps.
type summary struct {
	name           string
	rate, cpu, rss float64 // events/s, CPU s, bytes (medians)
	maxRSS         float64 // over every rep
	runs           int
	verified       []string // one per run: "" when the output checked out
	err            error
	samples        [][]rssSample
	events         int
}

func (e *env) workloads() []workload {
	fileCfg := func(buffer string) func(string, runCtx) (string, error) {
		return func(dir string, rc runCtx) (string, error) {
			return baseConfig(dir, rc) + fmt.Sprintf(`sinks:
  out:
    type: file
    inputs: [journal]
    path: %s
%s`, filepath.Join(dir, "out", "records.jsonl"), buffer), nil
		}
	}
	kafkaCfg := func(dir string, rc runCtx) (string, error) {
		return baseConfig(dir, rc) + fmt.Sprintf(`transforms:
  avro:
    type: avro
    inputs: [journal]
    registry: {urls: [%q], subject: %s-value}
sinks:
  kafka:
    type: kafka
    inputs: [avro]
    brokers: [%s]
    topic: %s
`, e.registry, rc.topic, strings.Join(rc.brokers, ", "), rc.topic), nil
	}
	anonCfg := func(dir string, rc runCtx) (string, error) {
		key := filepath.Join(dir, "anon.key")
		if err := randomKey(key); err != nil {
			return "", err
		}
		return baseConfig(dir, rc) + fmt.Sprintf(`transforms:
  anon:
    type: anonymize
    inputs: [journal]
    key_file: %s
sinks:
  out:
    type: file
    inputs: [anon]
    format: avro
    path: %s
`, key, filepath.Join(dir, "out", "records.avro")), nil
	}
	naive := variant{name: "naive Python (json.loads/dumps)", kind: "naive", out: "naive"}
	dflt := variant{name: "fluxstream, defaults (disk spool)", kind: "flux", config: fileCfg(""), out: "json"}
	mem := variant{name: "fluxstream, memory buffer", kind: "flux", config: fileCfg("    buffer: {type: memory}\n"), out: "json"}
	prod := variant{name: "Python confluent-kafka", kind: "producer", out: "kafka"}
	fk := variant{name: "fluxstream, avro -> kafka", kind: "flux", config: kafkaCfg, out: "kafka"}
	kafkaTargets := func(s map[string]*summary) []check {
		f, p := s[fk.name], s[prod.name]
		return []check{
			atLeast(f, nil, 300e3, "%s records/s >= 300k"),
			atLeast(f, p, 2, "%.2fx the confluent-kafka script >= 2x"),
		}
	}
	all := []workload{
		{key: "file", title: "replay -> file", variants: []variant{naive, dflt, mem},
			targets: func(s map[string]*summary) []check {
				d, n, m := s[dflt.name], s[naive.name], s[mem.name]
				return []check{
					atLeast(d, nil, 400e3, "%s events/s >= 400k"),
					atLeast(d, n, 2, "%.2fx naive >= 2x"),
					atLeast(d, m, 0.85, "%.2fx the memory buffer >= 0.85x (within 15%%)"),
				}
			}},
		{key: "kafka", title: "replay -> avro -> kafka (kfake)", variants: []variant{prod, fk},
			peer: func(context.Context) (kafkaPeer, error) {
				return &kfakePeer{bin: e.kfakeBin, dir: e.work}, nil
			}, targets: kafkaTargets},
		{key: "kafka-apache", title: "replay -> avro -> kafka (Apache Kafka " + apache.Version + ")", variants: []variant{prod, fk},
			peer: func(ctx context.Context) (kafkaPeer, error) {
				if os.Getenv(apache.EnvHome) == "" {
					return nil, fmt.Errorf("skipped: %s is not set", apache.EnvHome)
				}
				logf("starting Apache Kafka")
				return startApache(ctx, e.work)
			}, targets: kafkaTargets},
		{key: "anonymize", title: "replay -> anonymize -> file (avro)", variants: []variant{
			{name: "fluxstream, defaults (disk spool)", kind: "flux", config: anonCfg, out: "avro"}}},
		{key: "scale", title: "replay -> file, 11M events / 1M jobs", large: true, sample: true, variants: []variant{dflt},
			targets: func(s map[string]*summary) []check {
				return []check{maxRSSCheck(s[dflt.name], 150e6), flatCheck(s[dflt.name])}
			}},
	}
	var out []workload
	for _, w := range all {
		if e.o.only != nil && !e.o.only[w.key] || e.o.only == nil && e.o.quick && w.large {
			continue
		}
		out = append(out, w)
	}
	return out
}

func baseConfig(dir string, rc runCtx) string {
	return fmt.Sprintf(`data_dir: %s
cluster: bench
log: {level: warn}
sources:
  journal:
    type: replay
    path: [%q]
`, filepath.Join(dir, "data"), rc.journal)
}

// runWorkload runs every variant o.reps times, rotating the order each
// rep so that no variant always goes first, and adds its rows to t.
func (e *env) runWorkload(ctx context.Context, w workload, t *table) {
	info := e.small
	if w.large {
		info = e.large
	}
	sums := map[string]*summary{}
	for _, v := range w.variants {
		sums[v.name] = &summary{name: v.name, events: info.Events}
	}
	var peer kafkaPeer
	if w.peer != nil {
		p, err := w.peer(ctx)
		if err != nil {
			logf("%s: %v", w.title, err)
			t.add(w.title, "", cells{err: err.Error()})
			return
		}
		peer = p
		defer peer.close()
	}
	results := map[string][]proc{}
	for rep := range e.o.reps {
		order := slices.Clone(w.variants)
		n := rep % len(order)
		order = append(order[n:], order[:n]...)
		for _, v := range order {
			s := sums[v.name]
			if s.err != nil {
				continue
			}
			label := fmt.Sprintf("%s-%d-%s", w.key, rep+1, v.kind)
			p, verr, err := e.runOnce(ctx, w, v, info, peer, label)
			if err != nil {
				logf("%s / %s: %v", w.title, v.name, err)
				s.err = err
				continue
			}
			results[v.name] = append(results[v.name], p)
			s.verified = append(s.verified, verr)
			logf("%s / %s, rep %d: %s events/s, CPU %.2fs, maxrss %s%s", w.title, v.name, rep+1,
				kilo(float64(info.Events)/p.Wall.Seconds()), p.CPU().Seconds(), mb(float64(p.MaxRSS)), okText(verr))
		}
	}
	for _, v := range w.variants {
		s := sums[v.name]
		ps := results[v.name]
		s.runs = len(ps)
		var rates, cpus, rsss []float64
		for _, p := range ps {
			rates = append(rates, float64(info.Events)/p.Wall.Seconds())
			cpus = append(cpus, p.CPU().Seconds())
			rsss = append(rsss, float64(p.MaxRSS))
			s.maxRSS = max(s.maxRSS, float64(p.MaxRSS))
			if len(p.Samples) > 0 {
				s.samples = append(s.samples, p.Samples)
			}
		}
		s.rate, s.cpu, s.rss = median(rates), median(cpus), median(rsss)
	}
	var checks []check
	if w.targets != nil {
		checks = w.targets(sums)
	}
	for i, v := range w.variants {
		s := sums[v.name]
		c := cells{}
		if s.err != nil {
			c.err = s.err.Error()
		} else {
			c = cells{rate: kilo(s.rate), cpu: fmt.Sprintf("%.2f", s.cpu), perCPU: kilo(float64(info.Events) / s.cpu),
				rss: mb(s.rss), verified: verifiedText(s, info)}
		}
		title := w.title
		if i > 0 {
			title = ""
		}
		t.add(title, v.name, c)
		for _, ch := range checks {
			if ch.on == v.name {
				t.addCheck(ch)
			}
		}
		for _, ss := range s.samples {
			t.notes = append(t.notes, rssNote(w.title, ss))
		}
	}
}

// runOnce runs one variant once in a fresh directory and checks its
// output; verr describes a failed check ("" = verified).
func (e *env) runOnce(ctx context.Context, w workload, v variant, info journalInfo, peer kafkaPeer, label string) (proc, string, error) {
	dir := filepath.Join(e.work, label)
	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o755); err != nil {
		return proc{}, "", err
	}
	if !e.o.keep {
		defer os.RemoveAll(dir)
	}
	rc := runCtx{journal: info.Path}
	if peer != nil {
		var err error
		if rc.brokers, rc.topic, err = peer.fresh(ctx, label); err != nil {
			return proc{}, "", err
		}
		defer peer.done(ctx)
	}
	var argv []string
	switch v.kind {
	case "flux":
		cfg, err := v.config(dir, rc)
		if err != nil {
			return proc{}, "", err
		}
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return proc{}, "", err
		}
		argv = []string{e.fluxBin, "run", "-c", path}
	case "naive":
		argv = []string{e.o.python, e.naivePy, rc.journal, filepath.Join(dir, "out", "naive.jsonl")}
	case "producer":
		argv = []string{e.o.python, e.prodPy, rc.journal, strings.Join(rc.brokers, ","), rc.topic}
	}
	p, err := run(ctx, dir, "run", argv, nil, w.sample)
	if err != nil {
		return p, "", err
	}
	probe := strconv.FormatUint(info.Probe, 10)
	var n int
	var found bool
	switch v.out {
	case "json":
		n, found, err = readLines(filepath.Join(dir, "out"), []byte(`"job":{"id":`+probe+`,`))
	case "naive":
		n, found, err = readLines(filepath.Join(dir, "out"), []byte(`{"id": `+probe+`,`))
	case "avro":
		n, found, err = readAvro(filepath.Join(dir, "out"), info.Probe)
	case "kafka":
		n, found, err = readTopic(ctx, rc.brokers, rc.topic, probe)
	}
	if err != nil {
		return p, "", fmt.Errorf("reading the output: %w", err)
	}
	var problems []string
	if n != info.Records {
		problems = append(problems, fmt.Sprintf("%d records, want %d", n, info.Records))
	}
	if !found {
		problems = append(problems, "job "+probe+" missing")
	}
	return p, strings.Join(problems, "; "), nil
}

// readLines counts the lines of every file in dir and whether one holds
// probe.
func readLines(dir string, probe []byte) (int, bool, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		return 0, false, err
	}
	sort.Strings(files)
	n, found := 0, false
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return n, found, err
		}
		br := bufio.NewReaderSize(f, 1<<20)
		for {
			line, err := br.ReadSlice('\n')
			if err == bufio.ErrBufferFull {
				// Longer than the buffer: no record is; count it whole.
				for err == bufio.ErrBufferFull {
					_, err = br.ReadSlice('\n')
				}
				n++
				continue
			}
			if len(line) > 0 && line[len(line)-1] == '\n' {
				n++
				if !found && bytes.Contains(line, probe) {
					found = true
				}
			}
			if err != nil {
				break
			}
		}
		f.Close()
	}
	return n, found, nil
}

// readAvro decodes every record of the Avro container files in dir.
func readAvro(dir string, probe uint64) (int, bool, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		return 0, false, err
	}
	sort.Strings(files)
	n, found := 0, false
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return n, found, err
		}
		dec, err := ocf.NewDecoder(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			f.Close()
			return n, found, fmt.Errorf("%s: %w", path, err)
		}
		for dec.HasNext() {
			var r avrorec.Record
			if err := dec.Decode(&r); err != nil {
				f.Close()
				return n, found, fmt.Errorf("%s: record %d: %w", path, n+1, err)
			}
			n++
			if r.Job != nil && uint64(r.Job.ID) == probe {
				found = true
			}
		}
		err = dec.Error()
		f.Close()
		if err != nil {
			return n, found, fmt.Errorf("%s: %w", path, err)
		}
	}
	return n, found, nil
}

func verifiedText(s *summary, info journalInfo) string {
	bad := 0
	first := ""
	for _, v := range s.verified {
		if v != "" {
			if bad == 0 {
				first = v
			}
			bad++
		}
	}
	if bad > 0 {
		return fmt.Sprintf("NO (%d of %d runs): %s", bad, len(s.verified), first)
	}
	return fmt.Sprintf("%d records, job %d", info.Records, info.Probe)
}

func okText(verr string) string {
	if verr == "" {
		return ", output verified"
	}
	return ", OUTPUT WRONG: " + verr
}

// atLeast checks a's rate against floor (ref nil) or against floor
// times ref's rate; format gets the measured figure.
func atLeast(a, ref *summary, floor float64, format string) check {
	c := atLeast1(a, ref, floor, format)
	c.on = a.name
	return c
}

func atLeast1(a, ref *summary, floor float64, format string) check {
	if a.runs == 0 || ref != nil && ref.runs == 0 {
		return check{what: strings.Replace(format, "%s", "?", 1), absent: true}
	}
	if ref == nil {
		return check{what: fmt.Sprintf(format, kilo(a.rate)), ok: a.rate >= floor}
	}
	r := a.rate / ref.rate
	if strings.Contains(format, "%.2f") {
		return check{what: fmt.Sprintf(format, r), ok: r >= floor}
	}
	return check{what: fmt.Sprintf(format, kilo(r)), ok: r >= floor}
}

func maxRSSCheck(s *summary, limit float64) check {
	if s.runs == 0 {
		return check{on: s.name, what: "peak RSS <= 150 MB", absent: true}
	}
	return check{on: s.name, what: fmt.Sprintf("peak RSS %s (max of %d runs) <= 150 MB", mb(s.maxRSS), s.runs), ok: s.maxRSS <= limit}
}

// flatCheck: in every sampled run, the VmRSS peak of the second half of
// the run is at most 10% (+8 MB) above that of the first half: memory
// does not grow with the number of jobs seen.
func flatCheck(s *summary) check {
	if len(s.samples) == 0 {
		return check{on: s.name, what: "memory flat (VmRSS every second)", absent: true}
	}
	ok := true
	worst := 0.0
	for _, ss := range s.samples {
		h := len(ss) / 2
		if h == 0 {
			continue
		}
		var p1, p2 int64
		for i, x := range ss {
			if i < h {
				p1 = max(p1, x.RSS)
			} else {
				p2 = max(p2, x.RSS)
			}
		}
		g := float64(p2) / float64(p1)
		worst = max(worst, g)
		if float64(p2) > 1.1*float64(p1)+8e6 {
			ok = false
		}
	}
	return check{on: s.name, what: fmt.Sprintf("memory flat: 2nd-half VmRSS peak %.2fx the 1st half's (<= 1.1x + 8 MB)", worst), ok: ok}
}

// rssNote is one sampled run's VmRSS (and anonymous RSS) at each tenth.
func rssNote(title string, ss []rssSample) string {
	var rss, anon []string
	for i := 1; i <= 10; i++ {
		x := ss[max(0, len(ss)*i/10-1)]
		rss = append(rss, strconv.FormatInt(x.RSS/1e6, 10))
		anon = append(anon, strconv.FormatInt(x.Anon/1e6, 10))
	}
	return fmt.Sprintf("%s: VmRSS at each tenth of the run (%d samples, 1/s), MB: %s; RssAnon: %s",
		title, len(ss), strings.Join(rss, " "), strings.Join(anon, " "))
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func kilo(x float64) string {
	switch {
	case x >= 10e3:
		return fmt.Sprintf("%.0fk", x/1e3)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

func mb(b float64) string { return fmt.Sprintf("%.0f MB", b/1e6) }
