package anonymize

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/transformtest"
	"github.com/fluxstream/fluxstream/schemas"
	"github.com/fluxstream/fluxstream/sinks/kafka"
	"github.com/fluxstream/fluxstream/transforms/avro"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func process(t testing.TB, tr core.Transform, r *core.Record) *core.Record {
	t.Helper()
	out, err := tr.Process(context.Background(), r)
	if err != nil {
		t.Fatalf("%s: %v", r.ID, err)
	}
	if len(out) != 1 {
		t.Fatalf("%s: %d records out", r.ID, len(out))
	}
	return out[0]
}

func newAvro(t testing.TB) core.Transform {
	nc, err := core.ParseNodeConfig(core.KindTransform, "avro", []byte("encoding: single-object\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := avro.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	a.(core.Provisioner).Provision(context.Background(), core.NodeContext{Logger: quiet()})
	return a.(core.Transform)
}

func newKafka(t testing.TB) *kafka.Sink {
	nc, err := core.ParseNodeConfig(core.KindSink, "kafka", []byte("brokers: [127.0.0.1:1]\ntopic: flux-jobs\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := kafka.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return s.(*kafka.Sink)
}

// The property: with the default profile, no personal value of the
// fixtures (user name, uid, cwd, job names, command words and lines, memo
// values) is left in what a sink gets: the JSON form, the Avro form (the
// avro transform after anonymize), the Kafka key, headers and dry-run
// line. The input records are not changed.
func TestDefaultProfileLeavesNoPersonalValue(t *testing.T) {
	tr := newTransform(t, "")
	av := newAvro(t)
	k := newKafka(t)
	for _, path := range fixtures {
		t.Run(filepath.Base(path), func(t *testing.T) {
			recs := records(t, path, includeAll)
			p := personalValues(t, recs)
			if !p.strs["/tmp/fx"] || !p.strs["hostname"] && !p.strs["true"] {
				t.Fatalf("personal values not found in the fixture: %v", p.strs)
			}
			before := make([][]byte, len(recs))
			for i, r := range recs {
				before[i], _ = r.MarshalJSON()
				// The fixture does hold them (the check is not blind).
				var hits int
				dec := json.NewDecoder(bytes.NewReader(before[i]))
				dec.UseNumber()
				var v any
				dec.Decode(&v)
				p.check(v, "", func(string, string) { hits++ })
				if r.Job != nil && hits == 0 {
					t.Fatalf("%s: the original holds no personal value?", r.ID)
				}
			}
			var dry bytes.Buffer
			step := 1
			if len(recs) > 5000 {
				step = 17 // the bulk run: one user, one cwd, one name; a sample is as good
			}
			for i, r := range recs {
				if i%step != 0 {
					continue
				}
				out := process(t, tr, r)
				js, err := out.JSON()
				if err != nil {
					t.Fatal(err)
				}
				p.checkJSON(t, r.ID+" json", js)

				enc := process(t, av, out)
				p.checkBytes(t, r.ID+" avro bytes", enc.Encoded.Value)
				back, err := schemas.DecodeToJSON(enc.Encoded)
				if err != nil {
					t.Fatalf("%s: the Avro form does not decode: %v", r.ID, err)
				}
				p.checkJSON(t, r.ID+" avro", back)
				if !bytes.Equal(back, js) {
					t.Fatalf("%s: Avro and JSON forms differ:\n%s\n%s", r.ID, back, js)
				}

				for _, rec := range []*core.Record{out, enc} {
					m, err := k.Message(rec)
					if err != nil {
						t.Fatal(err)
					}
					p.checkBytes(t, r.ID+" kafka key", m.Key)
					for _, h := range m.Headers {
						p.checkBytes(t, r.ID+" kafka header "+h.Key, h.Value)
						if p.strs[string(h.Value)] {
							t.Errorf("%s: kafka header %s=%s", r.ID, h.Key, h.Value)
						}
					}
				}
				if i%7 == 0 { // a sample for the dry-run lines
					if err := k.DryRun(context.Background(), []*core.Record{out, enc}, &dry); err != nil {
						t.Fatal(err)
					}
				}
				if now, _ := r.MarshalJSON(); !bytes.Equal(now, before[i]) {
					t.Fatalf("%s: the input record changed:\n%s\n%s", r.ID, before[i], now)
				}
			}
			for _, line := range strings.Split(strings.TrimSpace(dry.String()), "\n") {
				_, value, ok := strings.Cut(line, " value=")
				if !ok {
					t.Fatalf("dry-run line %q", line)
				}
				p.checkBytes(t, "dry-run", []byte(line))
				p.checkJSON(t, "dry-run value", []byte(value))
			}
		})
	}
}

// Hand-written expectations on one scenario job: what each part becomes.
func TestDefaultProfileValues(t *testing.T) {
	tr := newTransform(t, "")
	recs := records(t, fixtures[0], includeAll)
	u := tr.Pseudonym("u-", 16, "fluxuser")
	uid := tr.PseudoID("6001")
	if !regexp.MustCompile(`^u-[0-9a-f]{16}$`).MatchString(u) || uid < 1<<31 || uid == UnknownUID {
		t.Fatalf("pseudonyms %q %d", u, uid)
	}
	var seen = map[string]bool{}
	for _, r := range recs {
		out := process(t, tr, r)
		if out.Job != nil {
			if out.Job.Username != u || out.Job.UserID != uid {
				t.Fatalf("%s: user %q %d, want %q %d", r.ID, out.Job.Username, out.Job.UserID, u, uid)
			}
			if out.Job.Queue != r.Job.Queue || out.Job.Bank != r.Job.Bank || out.Job.Nodelist != r.Job.Nodelist || out.Job.TSubmit != r.Job.TSubmit {
				t.Fatalf("%s: queue, bank, nodes or times changed", r.ID)
			}
			if r.Job.Name != "" && out.Job.Name != tr.Pseudonym("n-", 16, r.Job.Name) {
				t.Fatalf("%s: name %q", r.ID, out.Job.Name)
			}
			if r.Job.Cwd == "/tmp/fx" && out.Job.Cwd != tr.Pseudonym("p-", 16, "/tmp/fx") {
				t.Fatalf("%s: cwd %q", r.ID, out.Job.Cwd)
			}
		}
		if r.Event == nil {
			continue
		}
		ctx := string(out.Event.Context)
		switch r.Event.Name {
		case "submit":
			want := strings.Replace(string(r.Event.Context), `{"userid":6001,`, `{"userid":`+itoa(uid)+`,`, 1)
			if ctx != want || want == string(r.Event.Context) {
				t.Fatalf("submit context %s, want %s", ctx, want)
			}
			var js struct {
				Tasks []struct {
					Command []string `json:"command"`
				} `json:"tasks"`
				Attributes struct {
					System map[string]any `json:"system"`
				} `json:"attributes"`
			}
			json.Unmarshal(out.Jobspec, &js)
			var orig struct {
				Tasks []struct {
					Command []string `json:"command"`
				} `json:"tasks"`
			}
			json.Unmarshal(r.Jobspec, &orig)
			for i, w := range orig.Tasks[0].Command {
				if js.Tasks[0].Command[i] != tr.Pseudonym("c-", 16, w) {
					t.Fatalf("command word %d: %q", i, js.Tasks[0].Command[i])
				}
			}
			sys := js.Attributes.System
			if sys["queue"] != r.Job.Queue || sys["cwd"] != tr.Pseudonym("p-", 16, "/tmp/fx") {
				t.Fatalf("jobspec system %v", sys)
			}
			seen["submit"] = true
		case "memo":
			if strings.Contains(ctx, "waiting on admin") || strings.Contains(ctx, "volatile-value") || strings.Contains(ctx, ":42") {
				t.Fatalf("memo context %s", ctx)
			}
			if want := `"note":"` + tr.Pseudonym("m-", 16, "waiting on admin") + `"`; strings.Contains(string(r.Event.Context), "note") && !strings.Contains(ctx, want) {
				t.Fatalf("memo context %s, want %s", ctx, want)
			}
			seen["memo"] = true
		case "jobspec-update":
			if string(r.Event.Context) != ctx {
				t.Fatalf("jobspec-update of queue/duration changed: %s -> %s", r.Event.Context, ctx)
			}
			seen["jobspec-update"] = true
		case "exception":
			if string(r.Event.Context) != strings.Replace(ctx, `"userid":`+itoa(uid), `"userid":6001`, 1) {
				t.Fatalf("exception context %s -> %s", r.Event.Context, ctx)
			}
			seen["exception"] = true
		case "alloc":
			if !bytes.Equal(out.R, r.R) {
				t.Fatalf("R changed: %s", out.R)
			}
			seen["alloc"] = true
		}
	}
	for _, name := range []string{"submit", "memo", "jobspec-update", "exception", "alloc"} {
		if !seen[name] {
			t.Errorf("no %s event checked", name)
		}
	}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// Same key, same pseudonyms (across transforms: restarts and machines);
// another key, others.
func TestStableAcrossInstancesAndKeyed(t *testing.T) {
	a, b := newTransform(t, ""), newTransform(t, "")
	if a.Pseudonym("u-", 8, "alice") != b.Pseudonym("u-", 8, "alice") || a.PseudoID("6001") != b.PseudoID("6001") {
		t.Fatal("two instances with one key disagree")
	}
	// Pinned: the mapping must never change under a key, or joins break.
	if got := a.Pseudonym("u-", 8, "alice"); got != "u-"+hmacHex(testKey, "s\x00alice")[:8] {
		t.Fatalf("pseudonym %s", got)
	}
	c := newTransform(t, "")
	c.SetKey([]byte("another key, 16 bytes or more"))
	if c.Pseudonym("u-", 8, "alice") == a.Pseudonym("u-", 8, "alice") || c.PseudoID("6001") == a.PseudoID("6001") {
		t.Fatal("another key gives the same pseudonyms")
	}
}

// Rules of fields: override the profile, drop, redact with a replacement,
// keep inside a hashed subtree, uid drop, jobspec-update keys following
// jobspec rules.
func TestFieldRules(t *testing.T) {
	tr := newTransform(t, `fields:
  job.username: {action: hash, prefix: u-, length: 8}
  job.userid: drop
  job.cwd: {action: redact, pattern: '^/home/[^/]+', replace: /home/<user>}
  jobspec.attributes.system.cwd: {action: redact, pattern: '^/home/[^/]+', replace: /home/<user>}
  jobspec.attributes.user: hash
  jobspec.attributes.user.project: keep
  jobspec.tasks.*.command: drop
`)
	r := &core.Record{Kind: core.KindEvent, ID: "1:jobspec-update:3",
		Event: &core.Event{Name: "jobspec-update", Timestamp: 3,
			Context: json.RawMessage(`{"attributes.system.cwd":"/home/alice/run","attributes.user.project":"p1","attributes.user.mail":"alice@example.org","attributes.system.job.name":"secret","attributes.system.duration":60}`)},
		Job:     &core.Job{ID: 1, JobID: "f1", UserID: 6001, Username: "alice", Cwd: "/home/alice/run", Queue: "batch"},
		Jobspec: json.RawMessage(`{"tasks":[{"command":["a.out","--in","/home/alice/x"],"slot":"task"}],"attributes":{"user":{"project":"p1","mail":"alice@example.org","n":7},"system":{"cwd":"/home/alice/run"}}}`),
	}
	out := process(t, tr, r)
	if !regexp.MustCompile(`^u-[0-9a-f]{8}$`).MatchString(out.Job.Username) || out.Job.UserID != UnknownUID || out.Job.Cwd != "/home/<user>/run" || out.Job.Queue != "batch" {
		t.Fatalf("job %+v", out.Job)
	}
	wantJS := `{"tasks":[{"slot":"task"}],"attributes":{"user":{"project":"p1","mail":"` + tr.Pseudonym("", 16, "alice@example.org") + `","n":` + itoa(tr.PseudoID("7")) + `},"system":{"cwd":"/home/<user>/run"}}}`
	if string(out.Jobspec) != wantJS {
		t.Fatalf("jobspec\n got %s\nwant %s", out.Jobspec, wantJS)
	}
	wantCtx := `{"attributes.system.cwd":"/home/<user>/run","attributes.user.project":"p1","attributes.user.mail":"` + tr.Pseudonym("", 16, "alice@example.org") +
		`","attributes.system.job.name":"` + tr.Pseudonym("n-", 16, "secret") + `","attributes.system.duration":60}`
	if string(out.Event.Context) != wantCtx {
		t.Fatalf("jobspec-update context\n got %s\nwant %s", out.Event.Context, wantCtx)
	}
	if r.Job.Username != "alice" || !strings.Contains(string(r.Jobspec), "a.out") || !strings.Contains(string(r.Event.Context), "/home/alice") {
		t.Fatal("input changed")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"key: s3cret-s3cret-s3cret\n", "transforms.anon.key: a key written in the config is refused"},
		{"profile: default\n", "transforms.anon: the HMAC key is missing: give key_file"},
		{"key_file: /k\nkey_env: K\n", "transforms.anon.key_env: give key_file or key_env, not both"},
		{"key_file: /k\nfields:\n  job.cwd: scramble\n", `transforms.anon.fields.job.cwd: unknown action "scramble"`},
		{"key_file: /k\nfields:\n  job.cwd: {action: redact}\n", "fields.job.cwd: redact needs a pattern"},
		{"key_file: /k\nfields:\n  job.cwd: {action: redact, pattern: '('}\n", "fields.job.cwd: pattern: error parsing regexp"},
		{"key_file: /k\nfields:\n  event.context.note: hash\n", "fields.event.context.note: event contexts are named context.EVENT.PATH"},
		{"key_file: /k\nfields:\n  job.t_submit: hash\n", "use the filter transform to remove job.t_submit"},
		{"key_file: /k\nfields:\n  job.usrname: hash\n", "fields.job.usrname: not a field of the record"},
		{"key_file: /k\nfields:\n  job.name: {action: hash, length: 4}\n", "length must be 8..64"},
		{"key_file: /k\nprofil: none\n", `transforms.anon.profil: unknown key (did you mean "profile"?)`},
	} {
		nc, err := core.ParseNodeConfig(core.KindTransform, "anon", []byte(c.yaml))
		if err == nil {
			_, err = New(nc)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want %q", c.yaml, err, c.want)
		}
	}
	// The key file: missing, too short.
	nc, _ := core.ParseNodeConfig(core.KindTransform, "anon", []byte("key_file: /nonexistent/anon.key\n"))
	tr, err := New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.(*Transform).Provision(context.Background(), core.NodeContext{Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "anonymize key_file: open /nonexistent/anon.key") {
		t.Fatalf("missing key file: %v", err)
	}
	short := filepath.Join(t.TempDir(), "k")
	os.WriteFile(short, []byte("short\n"), 0o600)
	nc, _ = core.ParseNodeConfig(core.KindTransform, "anon", []byte("key_file: "+short+"\n"))
	tr, _ = New(nc)
	if err := tr.(*Transform).Provision(context.Background(), core.NodeContext{Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "the key has 5 bytes, want at least 16") {
		t.Fatalf("short key: %v", err)
	}
	t.Setenv("ANON_TEST_KEY", testKey)
	nc, _ = core.ParseNodeConfig(core.KindTransform, "anon", []byte("key_env: ANON_TEST_KEY\n"))
	tr, _ = New(nc)
	if err := tr.(*Transform).Provision(context.Background(), core.NodeContext{Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
	if got, want := tr.(*Transform).Pseudonym("", 8, "x"), newTransform(t, "").Pseudonym("", 8, "x"); got != want {
		t.Fatalf("key_env and key_file with one key disagree: %s %s", got, want)
	}
}

// Golden: the anonymized JSON form of a sample of scenario records.
func TestGolden(t *testing.T) {
	tr := newTransform(t, "")
	recs := records(t, fixtures[0], includeAll)
	var buf bytes.Buffer
	for i, r := range recs {
		if i%25 != 0 && r.Event.Name != "memo" && r.Event.Name != "jobspec-update" && r.Event.Name != "exception" {
			continue
		}
		r.Eventlog = nil // keep the file short: the eventlog is checked by the property test
		js, _ := process(t, tr, r).JSON()
		buf.Write(js)
		buf.WriteByte('\n')
	}
	transformtest.Golden(t, filepath.Join("testdata", "scenario.golden.jsonl"), buf.Bytes(), *update)
}

// The caches (pseudonyms, uids, JSON and eventlogs by identity) change
// nothing: one transform used by two goroutines at once, twice over the
// same records, gives what a fresh transform gives each record alone
// (its caches emptied before every record).
func TestCachesChangeNothing(t *testing.T) {
	recs := records(t, fixtures[0], includeAll)
	want := make([]string, len(recs))
	fresh := newTransform(t, "")
	for i, r := range recs {
		fresh.SetKey([]byte(testKey))
		js, _ := process(t, fresh, r).JSON()
		want[i] = string(js)
	}
	shared := newTransform(t, "")
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pass := range 2 {
				for i := range recs {
					if g == 1 {
						i = len(recs) - 1 - i // the other way round
					}
					out, err := shared.Process(context.Background(), recs[i])
					if err != nil {
						t.Error(err)
						return
					}
					if js, _ := out[0].MarshalJSON(); string(js) != want[i] {
						t.Errorf("goroutine %d pass %d, %s:\n got %s\nwant %s", g, pass, recs[i].ID, js, want[i])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}
