// Package filter is the `filter` transform: it removes fields from records
// (exclude:), or keeps only some (include:), by dotted paths with `*`
// wildcards over the whole record, Flux's own JSON (jobspec, R, event
// contexts, annotations) included.
package filter

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/transforms/filter/recpath"
)

// Sample is the sample config.
//
//go:embed sample.yaml
var Sample string

// Register adds the filter transform to r.
func Register(r *core.Registry) {
	r.RegisterTransform("filter", "remove fields (exclude:) or keep only some (include:) by dotted paths with * wildcards", New)
}

// Config is the transform's config.
type Config struct {
	// Include keeps only what these paths match (plus the fields a record
	// cannot lack: kind, id, event name and time, job id). Empty: keep
	// everything not excluded.
	Include []string `yaml:"include"`
	// Exclude removes what these paths match (after include).
	Exclude []string `yaml:"exclude"`

	inc, exc []recpath.Pattern
}

// sentinel fields are required in the Avro form but have a "not known"
// value in the contract: removing one writes that value.
var sentinel = map[string]bool{"job.userid": true, "job.urgency": true}

// Validate checks the decoded config.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Include) == 0 && len(c.Exclude) == 0 {
		errs = append(errs, core.Fieldf("", "give include: (paths to keep) or exclude: (paths to remove), or both"))
	}
	parse := func(key string, list []string) []recpath.Pattern {
		var out []recpath.Pattern
		for _, text := range list {
			p, err := recpath.Parse(text)
			if err != nil {
				errs = append(errs, core.Fieldf(key, "%v", err))
				continue
			}
			out = append(out, p)
		}
		if _, err := recpath.Compile(out); err != nil {
			errs = append(errs, core.Fieldf(key, "%v", err))
		}
		return out
	}
	c.inc = parse("include", c.Include)
	c.exc = parse("exclude", c.Exclude)
	for _, p := range c.exc {
		if !p.Literal() || sentinel[p.Text] {
			continue
		}
		if n := recpath.Record.Lookup(p.Text); n != nil && n.Required && n.Kind != recpath.Raw {
			errs = append(errs, core.Fieldf("exclude", "%s cannot be removed: the record contract requires it (Avro has no null for it)%s", p.Text, requiredHint(p.Text)))
		}
	}
	return errors.Join(errs...)
}

func requiredHint(path string) string {
	switch path {
	case "event", "job", "kind", "id", "event.name", "event.timestamp", "job.id", "job.jobid",
		"purge.id", "purge.jobid", "purge.reason", "invalid.error":
		return "; sinks key records by it"
	}
	if i := lastDot(path); i > 0 {
		return fmt.Sprintf("; remove %s as a whole", path[:i])
	}
	return ""
}

func lastDot(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return i
		}
	}
	return -1
}

// Transform filters fields.
type Transform struct {
	cfg      Config
	pruner   recpath.Pruner
	clears   []func(*core.Record)
	owns     int // ownParts before the clears
	raws     []rawPlan
	eventlog *recpath.Start // nil: the eventlog is left as it is
	cache    recpath.Cache
	warnings []*core.ConfigError
	log      *slog.Logger
}

var (
	_ core.Transform   = (*Transform)(nil)
	_ core.Provisioner = (*Transform)(nil)
	_ core.Warner      = (*Transform)(nil)
)

// New decodes the node's config and plans the work.
func New(nc *core.NodeConfig) (any, error) {
	t := &Transform{}
	if err := nc.Decode(&t.cfg); err != nil {
		return nil, err
	}
	for _, group := range []struct {
		key  string
		pats []recpath.Pattern
	}{{"include", t.cfg.inc}, {"exclude", t.cfg.exc}} {
		for _, p := range group.pats {
			if !recpath.CanMatch(p) {
				t.warnings = append(t.warnings, nc.Errorf(group.key, "warning: %s can never match: it is not a field of the record (schemas/record.md)", p.Text))
			}
		}
	}
	if len(t.cfg.inc) > 0 {
		t.pruner.Include, _ = recpath.Compile(t.cfg.inc)
	}
	if len(t.cfg.exc) > 0 {
		t.pruner.Exclude, _ = recpath.Compile(t.cfg.exc)
	}
	t.plan(recpath.Record, "", t.pruner.Include.Start(), t.pruner.Exclude.Start(), t.pruner.Include == nil)
	return t, nil
}

// Warnings are the problems that do not stop the config: paths that can
// never match. Provision logs them.
func (t *Transform) Warnings() []*core.ConfigError { return t.warnings }

// Provision logs the warnings.
func (t *Transform) Provision(_ context.Context, nc core.NodeContext) error {
	t.log = nc.Logger
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	for _, w := range t.warnings {
		t.log.Warn(w.Error())
	}
	return nil
}

// plan walks the typed part of the contract once, at start, and records
// what each record needs: fields to clear, raw subtrees to prune. It
// returns whether an include kept something of n (beyond what n cannot
// lack).
func (t *Transform) plan(n *recpath.Node, path string, inc, exc recpath.State, keepAll bool) bool {
	anyKept := false
	for _, c := range n.Children {
		cp := join(path, c.Name)
		ci, ce, excluded, ck := t.pruner.Step(inc, exc, keepAll, c.Name)
		removable := !c.Required || sentinel[cp]
		if excluded && removable {
			t.clear(cp)
			continue
		}
		switch {
		case c.Kind == recpath.Raw:
			s := recpath.Start{Inc: ci, Exc: ce, KeepAll: ck}
			if !ck && ci.Empty() {
				t.clear(cp)
				continue
			}
			if !s.Untouched() {
				t.raws = append(t.raws, rawPlan{path: cp, start: s, field: rawFields[cp]})
			}
			anyKept = true
		case c.Kind == recpath.Object:
			if ck && ci.Empty() && ce.Empty() {
				anyKept = true
				continue
			}
			kept := t.plan(c, cp, ci, ce, ck)
			if !ck && !kept && removable {
				t.clear(cp)
				continue
			}
			anyKept = anyKept || kept || ck
		case cp == "eventlog":
			if !ck && ci.Empty() {
				t.clear(cp)
				continue
			}
			if ck && ci.Empty() && ce.Empty() {
				anyKept = true
				continue
			}
			t.eventlog = &recpath.Start{Inc: ci, Exc: ce, KeepAll: ck}
			anyKept = true
		default: // a leaf (or a list of strings, kept or removed whole)
			if ck {
				anyKept = true
				continue
			}
			if removable {
				t.clear(cp)
			}
		}
	}
	return anyKept
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func (t *Transform) clear(path string) {
	fn, ok := clears[path]
	if !ok {
		panic("filter: no clear for " + path) // the contract tree and the table disagree
	}
	t.clears = append(t.clears, fn)
	t.owns |= partOf(path)
}

// Process returns a filtered copy of r: a Derive, whose parts are
// replaced where the plan changes them and shared with r elsewhere.
func (t *Transform) Process(_ context.Context, r *core.Record) ([]*core.Record, error) {
	c := r.Derive()
	c.Encoded = nil // made from the unfiltered record: place encoders after filter
	ownParts(c, t.owns)
	for _, fn := range t.clears {
		fn(c)
	}
	for i, rp := range t.raws {
		slot := rp.field.get(c) // read only: it may be shared with r
		if slot == nil || len(*slot) == 0 {
			continue
		}
		out, err := t.prune(*slot, rp.start, i, "")
		if err != nil {
			return nil, fmt.Errorf("filter %s of %s: %w", rp.path, r.ID, err)
		}
		if sameBytes(out, *slot) {
			continue
		}
		if rp.field.own != nil {
			slot = rp.field.own(c)
		}
		*slot = out
	}
	if t.eventlog != nil {
		owned := false
		for i := range c.Eventlog {
			s := *t.eventlog
			ci, ce, _, ck := t.pruner.Step(s.Inc, s.Exc, s.KeepAll, recpath.Index(i))
			ci, ce, excluded, ck := t.pruner.Step(ci, ce, ck, "context")
			ctx := c.Eventlog[i].Context
			var out []byte
			switch st := (recpath.Start{Inc: ci, Exc: ce, KeepAll: ck}); {
			case excluded || (!ck && ci.Empty()):
				out = nil
			case st.Untouched() || len(ctx) == 0:
				continue
			default:
				var err error
				if out, err = t.prune(ctx, st, -1, recpath.Index(i)); err != nil {
					return nil, fmt.Errorf("filter eventlog.%d.context of %s: %w", i, r.ID, err)
				}
			}
			if sameBytes(out, ctx) {
				continue
			}
			if !owned { // the eventlog is shared with r until here
				c.Eventlog, owned = append([]core.Event(nil), c.Eventlog...), true
			}
			c.Eventlog[i].Context = out
		}
	}
	return []*core.Record{c}, nil
}

// sameBytes reports whether a and b are the very same bytes (or both
// empty).
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// prune prunes src, or returns what it made of these very bytes before
// (tag and name tell the places apart: an eventlog index can change what
// applies).
func (t *Transform) prune(src []byte, st recpath.Start, tag int, name string) ([]byte, error) {
	if out, kept, ok := t.cache.Get(src, tag, name); ok {
		if !kept {
			return nil, nil
		}
		return out, nil
	}
	out, kept, err := t.pruner.Prune(src, st) // src itself when nothing is pruned
	if err != nil {
		return nil, err
	}
	t.cache.Put(src, out, tag, name, kept)
	return out, nil
}
