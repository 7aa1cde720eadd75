// Package anonymize is the `anonymize` transform: it replaces what names a
// person in a record (user, uid, job name, paths, command lines, user
// annotations and memos) with keyed pseudonyms (HMAC-SHA256), drops it, or
// redacts it by regex, in the job snapshot and in Flux's own JSON alike
// (jobspec, R, event contexts, the eventlog). The same input always gives
// the same pseudonym under the same key, across restarts and machines, so
// joins and per-user dashboards keep working.
package anonymize

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/transforms/filter/recpath"
)

// Sample is the sample config.
//
//go:embed sample.yaml
var Sample string

// Register adds the anonymize transform to r.
func Register(r *core.Registry) {
	r.RegisterTransform("anonymize", "keyed pseudonyms (HMAC-SHA256) for users, uids, job names, paths and command lines", New)
}

// Actions.
const (
	Hash   = "hash"   // keyed pseudonym: prefix + hex digits; numbers become pseudonymous integers
	Drop   = "drop"   // remove (uids: the contract's "not known", 4294967295)
	Redact = "redact" // replace what Pattern matches (by Replace, or by the match's pseudonym)
	Keep   = "keep"   // leave as it is (exempts a path from a broader rule)
)

// MinKeyBytes is the shortest key accepted.
const MinKeyBytes = 16

// Config is the transform's config.
type Config struct {
	// KeyFile holds the HMAC key (its bytes, trailing newline removed).
	KeyFile string `yaml:"key_file"`
	// KeyEnv names an environment variable holding the key.
	KeyEnv string `yaml:"key_env"`
	// Key is refused: a key written in the config ends up in backups,
	// repositories and `ps`. It is here to say so clearly.
	Key string `yaml:"key"`
	// Profile is the starting rule set: "default" (README) or "none".
	Profile string `yaml:"profile"`
	// Fields adds rules, or replaces the profile's rule for the same path.
	Fields map[string]Rule `yaml:"fields"`

	rules []rule
}

// Rule is what happens to the values at one path. In YAML either a bare
// action (`job.cwd: drop`) or a mapping.
type Rule struct {
	Action string `yaml:"action"`
	// Prefix goes before a pseudonym (hash, and redact without replace).
	Prefix string `yaml:"prefix"`
	// Length is the pseudonym's count of hex digits (8..64, default 16).
	Length int `yaml:"length"`
	// Pattern is the regular expression (RE2) of redact.
	Pattern string `yaml:"pattern"`
	// Replace is what a match becomes ($1 for groups); unset: the match's
	// pseudonym.
	Replace *string `yaml:"replace"`
}

// UnmarshalText reads the bare-action form.
func (r *Rule) UnmarshalText(b []byte) error {
	r.Action = string(b)
	return nil
}

// rule is a checked Rule at a parsed path.
type rule struct {
	Rule
	path recpath.Pattern
	re   *regexp.Regexp
}

// DefaultHashLength is the default count of hex digits of a pseudonym
// (64 bits).
const DefaultHashLength = 16

// pathRe is what the default profile redacts in free text: a token with a
// slash in it (a path, a URI).
const pathRe = "[^\\s'\"`:;,()\\[\\]{}<>|&=]*/[^\\s'\"`:;,()\\[\\]{}<>|&=]*"

// DefaultProfile is the rule set without fields: (README.md explains it).
func DefaultProfile() map[string]Rule {
	h := func(prefix string) Rule { return Rule{Action: Hash, Prefix: prefix} }
	paths := Rule{Action: Redact, Pattern: pathRe, Prefix: "p-"}
	return map[string]Rule{
		"job.username":         h("u-"),
		"job.userid":           {Action: Hash},
		"job.name":             h("n-"),
		"job.cwd":              h("p-"),
		"job.uri":              h("uri-"),
		"job.exception.note":   paths,
		"job.annotations.user": h("m-"),

		"jobspec.tasks.*.command":               h("c-"),
		"jobspec.tasks.*.environment":           {Action: Drop},
		"jobspec.attributes.system.cwd":         h("p-"),
		"jobspec.attributes.system.job":         h("n-"),
		"jobspec.attributes.system.environment": {Action: Drop},
		"jobspec.attributes.system.files":       {Action: Drop},
		"jobspec.attributes.system.shell":       paths,
		"jobspec.attributes.user":               h("m-"),

		"context.*.userid":           {Action: Hash},
		"context.*.annotations.user": h("m-"),
		"context.memo":               h("m-"),
		"context.exception.note":     paths,

		"invalid.raw":   {Action: Drop},
		"invalid.error": paths,
		"invalid.where": paths,
	}
}

// stringField reaches one typed string field of a record. get reads it
// (for a Derive copy: maybe in memory shared with the original); own,
// set for fields inside a shared part (exception, allocated, invalid),
// gives the copy that part of its own and returns the field's place in it.
type stringField struct {
	get func(*core.Record) *string
	own func(*core.Record) *string
}

// stringFields are the typed string fields rules may name.
var stringFields = map[string]stringField{
	"cluster":      {get: func(r *core.Record) *string { return &r.Cluster }},
	"source":       {get: func(r *core.Record) *string { return &r.Source }},
	"job.username": jobStr(func(j *core.Job) *string { return &j.Username }),
	"job.name":     jobStr(func(j *core.Job) *string { return &j.Name }),
	"job.cwd":      jobStr(func(j *core.Job) *string { return &j.Cwd }),
	"job.queue":    jobStr(func(j *core.Job) *string { return &j.Queue }),
	"job.project":  jobStr(func(j *core.Job) *string { return &j.Project }),
	"job.bank":     jobStr(func(j *core.Job) *string { return &j.Bank }),
	"job.nodelist": jobStr(func(j *core.Job) *string { return &j.Nodelist }),
	"job.uri":      jobStr(func(j *core.Job) *string { return &j.URI }),
	"job.exception.note": {
		get: func(r *core.Record) *string {
			if r.Job == nil || r.Job.Exception == nil {
				return nil
			}
			return &r.Job.Exception.Note
		},
		own: func(r *core.Record) *string {
			x := *r.Job.Exception
			r.Job.Exception = &x
			return &x.Note
		},
	},
	"job.allocated.nodelist": {
		get: func(r *core.Record) *string {
			if r.Job == nil || r.Job.Allocated == nil {
				return nil
			}
			return &r.Job.Allocated.Nodelist
		},
		own: func(r *core.Record) *string {
			a := *r.Job.Allocated
			r.Job.Allocated = &a
			return &a.Nodelist
		},
	},
	"invalid.error": invStr(func(v *core.Invalid) *string { return &v.Error }),
	"invalid.where": invStr(func(v *core.Invalid) *string { return &v.Where }),
	"invalid.raw":   invStr(func(v *core.Invalid) *string { return &v.Raw }),
}

// jobStr is a field of the job, which a Derive copy owns.
func jobStr(fn func(*core.Job) *string) stringField {
	return stringField{get: func(r *core.Record) *string {
		if r.Job == nil {
			return nil
		}
		return fn(r.Job)
	}}
}

func invStr(fn func(*core.Invalid) *string) stringField {
	return stringField{
		get: func(r *core.Record) *string {
			if r.Invalid == nil {
				return nil
			}
			return fn(r.Invalid)
		},
		own: func(r *core.Record) *string {
			v := *r.Invalid
			r.Invalid = &v
			return fn(&v)
		},
	}
}

// rawRoots are where Flux's JSON starts; rules below them walk the bytes.
var rawRoots = map[string]bool{"jobspec": true, "R": true, "job.annotations": true, "context": true}

// Validate checks the decoded config and builds the rule list.
func (c *Config) Validate() error {
	var errs []error
	if c.Key != "" {
		errs = append(errs, core.Fieldf("key", "a key written in the config is refused (it ends up in backups and repositories): use key_file or key_env"))
	}
	switch {
	case c.KeyFile == "" && c.KeyEnv == "":
		errs = append(errs, core.Fieldf("", "the HMAC key is missing: give key_file (a file of at least %d random bytes) or key_env", MinKeyBytes))
	case c.KeyFile != "" && c.KeyEnv != "":
		errs = append(errs, core.Fieldf("key_env", "give key_file or key_env, not both"))
	}
	var merged map[string]Rule
	switch c.Profile {
	case "default":
		merged = DefaultProfile()
	case "none":
		merged = map[string]Rule{}
		if len(c.Fields) == 0 {
			errs = append(errs, core.Fieldf("fields", "profile none with no fields does nothing"))
		}
	default:
		errs = append(errs, core.Fieldf("profile", "unknown profile %q (default, none)", c.Profile))
	}
	for path, r := range c.Fields {
		merged[path] = r
	}
	c.rules = c.rules[:0]
	for _, path := range sortedKeys(merged) {
		r, err := checkRule(path, merged[path])
		if err != nil {
			errs = append(errs, core.Fieldf("fields."+path, "%v", err))
			continue
		}
		c.rules = append(c.rules, r)
	}
	return errors.Join(errs...)
}

func checkRule(path string, r Rule) (rule, error) {
	p, err := recpath.Parse(path)
	if err != nil {
		return rule{}, err
	}
	out := rule{Rule: r, path: p}
	switch r.Action {
	case Hash, Drop, Keep:
		if r.Pattern != "" || r.Replace != nil {
			return out, fmt.Errorf("pattern and replace belong to redact, not %s", r.Action)
		}
	case Redact:
		if r.Pattern == "" {
			return out, fmt.Errorf("redact needs a pattern (a regular expression)")
		}
		if out.re, err = regexp.Compile(r.Pattern); err != nil {
			return out, fmt.Errorf("pattern: %v", err)
		}
	case "":
		return out, fmt.Errorf("no action (hash, drop, redact, keep)")
	default:
		return out, fmt.Errorf("unknown action %q (hash, drop, redact, keep)", r.Action)
	}
	if r.Length == 0 {
		out.Length = DefaultHashLength
	} else if r.Length < 8 || r.Length > 64 {
		return out, fmt.Errorf("length must be 8..64 hex digits, got %d", r.Length)
	}
	root := p.Segs[0]
	switch {
	case root == "event" || root == "eventlog":
		return out, fmt.Errorf("event contexts are named context.EVENT.PATH (EVENT a name or *): the rule then covers event.context and every eventlog entry")
	case root == "context":
		if len(p.Segs) < 2 {
			return out, fmt.Errorf("name the event: context.EVENT.PATH (EVENT a name or *)")
		}
	case path == "job.userid":
		if r.Action == Redact {
			return out, fmt.Errorf("job.userid is a number: hash (a pseudonymous integer), drop or keep")
		}
	case stringFields[path].get != nil:
	case rawRoots[root] || (len(p.Segs) >= 2 && rawRoots[root+"."+p.Segs[1]]):
	default:
		if !recpath.CanMatch(p) {
			return out, fmt.Errorf("not a field of the record (schemas/record.md)")
		}
		return out, fmt.Errorf("anonymize works on strings, user ids and Flux's JSON (jobspec, R, job.annotations, context.EVENT); use the filter transform to remove %s", path)
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// New decodes the node's config. The key is read in Provision.
func New(nc *core.NodeConfig) (any, error) {
	t := &Transform{cfg: Config{Profile: "default"}}
	if err := nc.Decode(&t.cfg); err != nil {
		return nil, err
	}
	t.compile()
	return t, nil
}

// Provision reads the key.
func (t *Transform) Provision(_ context.Context, nc core.NodeContext) error {
	log := nc.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := t.cfg.readKey(log)
	if err != nil {
		return err
	}
	t.SetKey(key)
	return nil
}

func (c *Config) readKey(log *slog.Logger) ([]byte, error) {
	var key []byte
	if c.KeyFile != "" {
		b, err := os.ReadFile(c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("anonymize key_file: %w", err)
		}
		if fi, err := os.Stat(c.KeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("the anonymize key file is readable by others: chmod 600 it", "key_file", c.KeyFile, "mode", fi.Mode().Perm().String())
		}
		key = []byte(strings.TrimRight(string(b), "\r\n"))
		if len(key) < MinKeyBytes {
			return nil, fmt.Errorf("anonymize key_file %s: the key has %d bytes, want at least %d (e.g. head -c 32 /dev/urandom | base64 > %s)", c.KeyFile, len(key), MinKeyBytes, c.KeyFile)
		}
		return key, nil
	}
	v, ok := os.LookupEnv(c.KeyEnv)
	if !ok {
		return nil, fmt.Errorf("anonymize key_env: %s is not set", c.KeyEnv)
	}
	if len(v) < MinKeyBytes {
		return nil, fmt.Errorf("anonymize key_env %s: the key has %d bytes, want at least %d", c.KeyEnv, len(v), MinKeyBytes)
	}
	return []byte(v), nil
}
