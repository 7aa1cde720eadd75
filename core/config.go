package core

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	yamlv3 "go.yaml.in/yaml/v3"
)

// EnvPrefix marks environment variables that override config keys:
// FLUXSTREAM_SINKS__OUT__PATH=/x sets sinks.out.path ("__" separates keys,
// since node and key names contain "_").
const EnvPrefix = "FLUXSTREAM_"

// envNotConfig lists FLUXSTREAM_* variables that are not config keys.
var envNotConfig = map[string]bool{"FLUXSTREAM_CONFIG": true}

// topLevelKeys are the config's top-level keys: a FLUXSTREAM_* variable
// overrides config only under one of them.
var topLevelKeys = map[string]bool{"data_dir": true, "cluster": true, "log": true, "shutdown_timeout": true,
	"http": true, "sources": true, "transforms": true, "sinks": true}

// Config is a loaded, interpolated, but not yet built pipeline config.
type Config struct {
	File            string        // where it came from, for messages
	DataDir         string        // state: checkpoints and spools
	Cluster         string        // default cluster name for sources
	Log             LogConfig     //
	ShutdownTimeout time.Duration // how long sinks may take to drain at shutdown
	HTTP            *HTTPConfig   // metrics and health endpoints; nil: off
	Nodes           []*NodeConfig // sources, transforms, sinks, sorted by kind then name
	// Warnings are problems that do not stop validate, graph or dry-run
	// (a secret file missing on this machine); see Graph.Warnings.
	Warnings ConfigErrors
	loc      *locator
	problems ConfigErrors // found while loading; Build reports them with its own
}

// LogConfig selects log level and format.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Node kinds.
const (
	KindSource    = "source"
	KindTransform = "transform"
	KindSink      = "sink"
)

var sections = []struct{ key, kind string }{
	{"sources", KindSource}, {"transforms", KindTransform}, {"sinks", KindSink},
}

// NodeConfig is one node of the DAG as written in the config.
type NodeConfig struct {
	Name   string
	Kind   string // KindSource, KindTransform or KindSink
	Type   string
	Inputs []string
	Buffer BufferConfig // sinks only
	Retry  RetryConfig  // sinks only
	Batch  BatchConfig  // sinks only

	raw  map[string]any // the node's own keys (type, inputs, ... removed)
	cfg  *Config
	path string // e.g. "sinks.out"
}

// BufferConfig is a sink's buffer between the DAG and its writer.
type BufferConfig struct {
	// Type is "disk" (durable spool, the default) or "memory".
	Type string `yaml:"type"`
	// MaxBytes bounds a disk spool.
	MaxBytes ByteSize `yaml:"max_bytes"`
	// MaxRecords bounds a memory buffer, and the in-memory window of a disk
	// spool (records beyond it are read back from disk).
	MaxRecords int `yaml:"max_records"`
	// WhenFull is "block" (backpressure to the source) or "drop_oldest".
	WhenFull string `yaml:"when_full"`
	// SyncInterval is how often a disk spool is written and fsynced; a
	// record is safe from a crash (and counts as taken) once synced or
	// delivered. While the sink keeps up, records wait up to a second
	// for their delivery before they are written (diskBuffer).
	SyncInterval time.Duration `yaml:"sync_interval"`
}

// RetryConfig is the backoff for failed writes. Writes are retried until
// they succeed: at-least-once has no give-up.
type RetryConfig struct {
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	MaxBackoff     time.Duration `yaml:"max_backoff"`
}

// BatchConfig bounds what one Sink.Write receives.
type BatchConfig struct {
	MaxRecords int `yaml:"max_records"` // 0: the sink's default
}

// DefaultBatchRecords is batch.max_records for a sink that does not say.
const DefaultBatchRecords = 1000

// Path is the node's dotted config path, e.g. "sinks.out".
func (nc *NodeConfig) Path() string { return nc.path }

// Errorf returns a ConfigError located at the node's key (key may be "").
func (nc *NodeConfig) Errorf(key, format string, args ...any) *ConfigError {
	return nc.cfg.errAt(join(nc.path, key), fmt.Sprintf(format, args...))
}

// FieldError is what a component's Validate returns to point at one key of
// its config. Join several with errors.Join.
type FieldError struct {
	Key string // dotted, relative to the node, "" for the node itself
	Msg string
}

func (e *FieldError) Error() string {
	if e.Key == "" {
		return e.Msg
	}
	return e.Key + ": " + e.Msg
}

// Fieldf builds a FieldError.
func Fieldf(key, format string, args ...any) error {
	return &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Decode fills v (a pointer to a struct with `yaml` tags) from the node's
// keys, strictly: an unknown key, or a value of the wrong type, is an error
// naming file, line, node and key. Durations ("5s"), byte sizes ("64MiB")
// and comma-separated lists (for values from the environment) are
// converted.
func (nc *NodeConfig) Decode(v any) error {
	var md mapstructure.Metadata
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		TagName:          "yaml",
		Result:           v,
		Metadata:         &md,
		WeaklyTypedInput: true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.TextUnmarshallerHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
	})
	if err != nil {
		return err
	}
	var errs ConfigErrors
	if err := dec.Decode(nc.raw); err != nil {
		errs = append(errs, nc.decodeErrors(err)...)
	}
	unused := md.Unused
	sort.Strings(unused)
	for _, key := range unused {
		msg := "unknown key"
		if s := suggest(key, tagNames(reflect.TypeOf(v), key)); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		errs = append(errs, nc.Errorf(key, "%s", msg))
	}
	// Validate too, so that every problem shows at once, but keep only
	// what it says about keys that decoded cleanly.
	if val, ok := v.(Validator); ok {
		if err := val.Validate(); err != nil {
			bad := map[string]bool{}
			for _, e := range errs {
				bad[e.Path] = true
			}
			ves, _ := AsConfigErrors(nc.fieldErrors(err))
			for _, e := range ves {
				if !bad[e.Path] {
					errs = append(errs, e)
				}
			}
		}
	}
	if len(errs) > 0 {
		return errs.sorted()
	}
	return nil
}

// decodeErrors turns mapstructure's joined errors into located ones.
func (nc *NodeConfig) decodeErrors(err error) ConfigErrors {
	var out ConfigErrors
	var walk func(error)
	walk = func(err error) {
		var de *mapstructure.DecodeError
		if errors.As(err, &de) {
			out = append(out, nc.Errorf(de.Name(), "%s", cleanDecodeMsg(de.Unwrap())))
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if u := errors.Unwrap(err); u != nil {
			walk(u)
			return
		}
		out = append(out, nc.Errorf("", "%v", err))
	}
	walk(err)
	return out
}

func cleanDecodeMsg(err error) string {
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("cannot use %q as %s: %v", fmt.Sprint(pe.Value), pe.Expected.Type(), pe.Err)
	}
	var ue *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ue) {
		return fmt.Sprintf("want %s, got %s %q", describeType(ue.Expected.Type()), describeValue(ue.Value), fmt.Sprint(ue.Value))
	}
	return err.Error()
}

func describeType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

func describeValue(v any) string {
	switch v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	}
	return reflect.TypeOf(v).String()
}

// fieldErrors locates the errors a Validate returned.
func (nc *NodeConfig) fieldErrors(err error) error {
	var out ConfigErrors
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *FieldError
		if errors.As(err, &fe) {
			out = append(out, nc.Errorf(fe.Key, "%s", fe.Msg))
			return
		}
		var ce *ConfigError
		if errors.As(err, &ce) {
			out = append(out, ce)
			return
		}
		out = append(out, nc.Errorf("", "%v", err))
	}
	walk(err)
	return out
}

// tagNames lists the yaml keys of the struct that holds key's last part.
func tagNames(t reflect.Type, key string) []string {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
		f, ok := fieldByTag(t, p)
		if !ok {
			return nil
		}
		t = f.Type
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var names []string
	for i := range t.NumField() {
		if n := tagName(t.Field(i)); n != "" && n != "-" {
			names = append(names, n)
		}
	}
	return names
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if tagName(t.Field(i)) == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func tagName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if tag == "" && f.IsExported() {
		return strings.ToLower(f.Name)
	}
	return tag
}

// suggest returns the candidate closest to the last part of key, if close.
func suggest(key string, candidates []string) string {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		key = key[i+1:]
	}
	best, bestD := "", 3
	for _, c := range candidates {
		// Close, and not mostly a different word.
		if d := editDistance(key, c); d < bestD && 2*d <= len(key) {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// LoadOptions adjust LoadConfig for tests and the CLI.
type LoadOptions struct {
	Environ  []string                     // nil: os.Environ()
	ReadFile func(string) ([]byte, error) // for ${file:...}; nil: os.ReadFile
	// SecretsOptional turns a ${file:...} that cannot be read into a
	// warning (validate, graph and dry-run on a machine without the
	// secrets); run leaves it an error.
	SecretsOptional bool
}

// LoadConfigFile reads and loads a YAML config file.
func LoadConfigFile(path string, opts LoadOptions) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return LoadConfig(path, data, opts)
}

var nodeNameRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

// LoadConfig parses a YAML config (name is used in messages), applies
// FLUXSTREAM_* overrides, expands ${VAR}, ${VAR:-default} and ${file:PATH}
// in string values, and checks the top-level layout. Node configs are
// decoded later by Build, with the component that owns them. Every problem
// found is returned at once, as ConfigErrors; unless the YAML itself is
// broken, the Config is returned too, so that Build can add what it finds.
func LoadConfig(name string, data []byte, opts LoadOptions) (*Config, error) {
	if opts.Environ == nil {
		opts.Environ = os.Environ()
	}
	if opts.ReadFile == nil {
		opts.ReadFile = os.ReadFile
	}
	cfg := &Config{File: name, loc: &locator{file: name, lines: map[string]int{}, env: map[string]string{}}}

	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil {
		return nil, ConfigErrors{yamlSyntaxError(name, err)}
	}
	cfg.loc.index(&doc, "")
	if len(doc.Content) > 0 && doc.Content[0].Kind != yamlv3.MappingNode {
		return nil, ConfigErrors{{File: name, Line: doc.Content[0].Line, Msg: "the config must be a YAML mapping (sources:, transforms:, sinks:)"}}
	}

	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(data), yaml.Parser()); err != nil {
		return nil, ConfigErrors{{File: name, Msg: err.Error()}}
	}
	var errs ConfigErrors
	envK := koanf.New(".")
	err := envK.Load(env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return opts.Environ },
		TransformFunc: func(k, v string) (string, any) {
			if envNotConfig[k] {
				return "", nil
			}
			path := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, EnvPrefix), "__", "."))
			if top, _, _ := strings.Cut(path, "."); !topLevelKeys[top] {
				// FLUXSTREAM_KAFKA_HOME and the like: settings of tools and
				// tests, not config overrides.
				return "", nil
			}
			if strings.Contains(path, "..") || strings.HasPrefix(path, ".") || strings.HasSuffix(path, ".") {
				errs = append(errs, &ConfigError{File: "env " + k, Msg: "malformed key path " + strconv.Quote(path)})
				return "", nil
			}
			cfg.loc.env[path] = k
			return path, v
		},
	}), nil)
	if err != nil {
		return nil, err
	}
	if err := k.Merge(envK); err != nil {
		return nil, fmt.Errorf("apply %s* overrides: %w", EnvPrefix, err)
	}

	root := k.Raw()
	errs = append(errs, cfg.interpolate(root, "", opts)...)

	for key := range root {
		switch key {
		case "data_dir", "cluster", "log", "shutdown_timeout", "http", "sources", "transforms", "sinks":
		default:
			msg := "unknown top-level key"
			if s := suggest(key, []string{"data_dir", "cluster", "log", "shutdown_timeout", "http", "sources", "transforms", "sinks"}); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			errs = append(errs, cfg.errAt(key, msg))
		}
	}
	cfg.DataDir = cfg.str(root, "data_dir", &errs)
	cfg.Cluster = cfg.str(root, "cluster", &errs)
	if v, ok := root["shutdown_timeout"]; ok {
		d, err := time.ParseDuration(fmt.Sprint(v))
		if err != nil || d < 0 {
			errs = append(errs, cfg.errAt("shutdown_timeout", fmt.Sprintf("want a duration like 30s, got %q", fmt.Sprint(v))))
		}
		cfg.ShutdownTimeout = d
	}
	if v, ok := root["log"]; ok {
		logNode := &NodeConfig{cfg: cfg, path: "log"}
		if m, ok := v.(map[string]any); ok {
			logNode.raw = m
			if err := logNode.Decode(&cfg.Log); err != nil {
				errs = append(errs, flattenConfigErrors(err)...)
			}
		} else {
			errs = append(errs, cfg.errAt("log", "want a mapping with level and format"))
		}
	}
	switch cfg.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, cfg.errAt("log.level", fmt.Sprintf("unknown level %q (debug, info, warn, error)", cfg.Log.Level)))
	}
	switch cfg.Log.Format {
	case "", "text", "json":
	default:
		errs = append(errs, cfg.errAt("log.format", fmt.Sprintf("unknown format %q (text, json)", cfg.Log.Format)))
	}

	if v, ok := root["http"]; ok {
		errs = append(errs, cfg.loadHTTP(v)...)
	}

	seen := map[string]string{}
	for _, sec := range sections {
		v, ok := root[sec.key]
		if !ok || v == nil {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			errs = append(errs, cfg.errAt(sec.key, "want a mapping of node names to node configs"))
			continue
		}
		for _, name := range sortedKeys(m) {
			path := sec.key + "." + name
			if !nodeNameRe.MatchString(name) {
				errs = append(errs, cfg.errAt(path, "node names start with a letter and hold only letters, digits, '_' and '-'"))
				continue
			}
			if other, dup := seen[name]; dup {
				errs = append(errs, cfg.errAt(path, fmt.Sprintf("node name %q is already used by %s.%s; names are unique across sources, transforms and sinks", name, other, name)))
				continue
			}
			seen[name] = sec.key
			nc, nerrs := cfg.nodeConfig(sec.kind, name, path, m[name])
			errs = append(errs, nerrs...)
			if nc != nil {
				cfg.Nodes = append(cfg.Nodes, nc)
			}
		}
	}
	if len(errs) > 0 {
		cfg.problems = errs.sorted()
		return cfg, cfg.problems
	}
	return cfg, nil
}

func flattenConfigErrors(err error) ConfigErrors {
	if es, ok := AsConfigErrors(err); ok {
		return es
	}
	return ConfigErrors{{Msg: err.Error()}}
}

func (c *Config) nodeConfig(kind, name, path string, v any) (*NodeConfig, ConfigErrors) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, ConfigErrors{c.errAt(path, "want a mapping with at least a type")}
	}
	nc := &NodeConfig{Name: name, Kind: kind, cfg: c, path: path, raw: map[string]any{}}
	var errs ConfigErrors
	for key, val := range m {
		switch {
		case key == "type":
			s, ok := val.(string)
			if !ok || s == "" {
				errs = append(errs, c.errAt(path+".type", "want the component type as a string"))
			}
			nc.Type = s
		case key == "inputs" && kind != KindSource:
			nc.Inputs, ok = stringList(val)
			if !ok {
				errs = append(errs, c.errAt(path+".inputs", "want a list of node names"))
			}
		case key == "inputs":
			errs = append(errs, c.errAt(path+".inputs", "a source has no inputs"))
		case (key == "buffer" || key == "retry" || key == "batch") && kind == KindSink:
			sub := &NodeConfig{cfg: c, path: path + "." + key}
			sm, ok := val.(map[string]any)
			if !ok {
				errs = append(errs, c.errAt(sub.path, "want a mapping"))
				continue
			}
			sub.raw = sm
			var target any = &nc.Buffer
			switch key {
			case "retry":
				target = &nc.Retry
			case "batch":
				target = &nc.Batch
			}
			if err := sub.Decode(target); err != nil {
				errs = append(errs, flattenConfigErrors(err)...)
			}
		default:
			nc.raw[key] = val
		}
	}
	if _, ok := m["type"]; !ok {
		errs = append(errs, c.errAt(path, "missing type"))
	}
	if kind == KindSink {
		errs = append(errs, nc.checkSinkRuntime()...)
	}
	return nc, errs
}

func (nc *NodeConfig) checkSinkRuntime() ConfigErrors {
	var errs ConfigErrors
	b := &nc.Buffer
	switch b.Type {
	case "":
		b.Type = "disk"
	case "disk", "memory":
	default:
		errs = append(errs, nc.Errorf("buffer.type", "unknown buffer type %q (disk, memory)", b.Type))
	}
	switch b.WhenFull {
	case "":
		b.WhenFull = "block"
	case "block", "drop_oldest":
	default:
		errs = append(errs, nc.Errorf("buffer.when_full", "unknown policy %q (block, drop_oldest)", b.WhenFull))
	}
	if b.MaxBytes < 0 {
		errs = append(errs, nc.Errorf("buffer.max_bytes", "must not be negative"))
	}
	if b.MaxBytes == 0 {
		b.MaxBytes = 1 << 30
	}
	if b.MaxBytes < 1<<20 {
		errs = append(errs, nc.Errorf("buffer.max_bytes", "must be at least 1MiB, got %s", b.MaxBytes))
	}
	if b.MaxRecords < 0 {
		errs = append(errs, nc.Errorf("buffer.max_records", "must not be negative"))
	}
	if b.MaxRecords == 0 {
		b.MaxRecords = 10000
	}
	if b.SyncInterval < 0 {
		errs = append(errs, nc.Errorf("buffer.sync_interval", "must not be negative"))
	}
	if b.SyncInterval == 0 {
		b.SyncInterval = 50 * time.Millisecond
	}
	if nc.Retry.InitialBackoff <= 0 {
		nc.Retry.InitialBackoff = 200 * time.Millisecond
	}
	if nc.Retry.MaxBackoff <= 0 {
		nc.Retry.MaxBackoff = 30 * time.Second
	}
	if nc.Retry.MaxBackoff < nc.Retry.InitialBackoff {
		errs = append(errs, nc.Errorf("retry.max_backoff", "is shorter than retry.initial_backoff"))
	}
	if nc.Batch.MaxRecords < 0 {
		errs = append(errs, nc.Errorf("batch.max_records", "must not be negative"))
	}
	return errs // batch.max_records 0: the sink's default (BatchSizer) or DefaultBatchRecords
}

func stringList(v any) ([]string, bool) {
	switch l := v.(type) {
	case string: // from the environment: "a,b"
		var out []string
		for _, s := range strings.Split(l, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out, true
	case []any:
		out := make([]string, 0, len(l))
		for _, e := range l {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

func (c *Config) str(m map[string]any, key string, errs *ConfigErrors) string {
	v, ok := m[key]
	if !ok || v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		*errs = append(*errs, c.errAt(key, "want a string"))
	}
	return s
}

var interpRe = regexp.MustCompile(`\$\$|\$\{([^}]*)\}`)

// interpolate expands ${VAR}, ${VAR:-default} and ${file:PATH} in every
// string value (after parsing, so values never change the YAML structure).
// "$$" is a literal "$".
func (c *Config) interpolate(m map[string]any, prefix string, opts LoadOptions) ConfigErrors {
	var errs ConfigErrors
	envMap := map[string]string{}
	for _, kv := range opts.Environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			envMap[k] = v
		}
	}
	var walk func(v any, path string) any
	walk = func(v any, path string) any {
		switch t := v.(type) {
		case map[string]any:
			for k, e := range t {
				t[k] = walk(e, join(path, k))
			}
		case []any:
			for i, e := range t {
				t[i] = walk(e, path)
			}
		case string:
			if !strings.Contains(t, "$") {
				return t
			}
			return interpRe.ReplaceAllStringFunc(t, func(ref string) string {
				if ref == "$$" {
					return "$"
				}
				expr := ref[2 : len(ref)-1]
				if p, ok := strings.CutPrefix(expr, "file:"); ok {
					if !filepath.IsAbs(p) && c.File != "" {
						p = filepath.Join(filepath.Dir(c.File), p)
					}
					b, err := opts.ReadFile(p)
					if err != nil && opts.SecretsOptional {
						cause := err
						if u := errors.Unwrap(err); u != nil {
							cause = u // a *PathError: the path is said already
						}
						c.Warnings = append(c.Warnings, c.errAt(path, fmt.Sprintf("cannot read secret file %s (%v); `fluxstream run` refuses to start without it", p, cause)))
						return "(secret from " + p + ")"
					}
					if err != nil {
						errs = append(errs, c.errAt(path, fmt.Sprintf("cannot read secret file: %v", err)))
						return ""
					}
					return strings.TrimRight(string(b), "\r\n")
				}
				name, def, hasDef := strings.Cut(expr, ":-")
				if !envNameRe.MatchString(name) {
					errs = append(errs, c.errAt(path, fmt.Sprintf("bad reference %s: want ${VAR}, ${VAR:-default} or ${file:PATH} ($$ for a literal $)", ref)))
					return ""
				}
				if val, ok := envMap[name]; ok && (val != "" || !hasDef) {
					return val
				}
				if hasDef {
					return def
				}
				errs = append(errs, c.errAt(path, fmt.Sprintf("environment variable %s is not set (use ${%s:-default} for a default)", name, name)))
				return ""
			})
		}
		return v
	}
	walk(m, prefix)
	return errs
}

var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (c *Config) errAt(path, msg string) *ConfigError {
	return c.loc.errAt(path, msg)
}

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "." + b
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// locator maps dotted key paths to the line they were written on.
type locator struct {
	file  string
	lines map[string]int
	env   map[string]string // path -> FLUXSTREAM_ variable that set it
}

func (l *locator) index(n *yamlv3.Node, path string) {
	switch n.Kind {
	case yamlv3.DocumentNode:
		for _, c := range n.Content {
			l.index(c, path)
		}
	case yamlv3.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i]
			p := join(path, key.Value)
			if _, ok := l.lines[p]; !ok {
				l.lines[p] = key.Line
			}
			l.index(n.Content[i+1], p)
		}
	case yamlv3.SequenceNode:
		for _, c := range n.Content {
			l.index(c, path)
		}
	}
}

func (l *locator) errAt(path, msg string) *ConfigError {
	for p := path; ; {
		if v, ok := l.env[p]; ok {
			return &ConfigError{File: "env " + v, Path: path, Msg: msg}
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	// The closest written ancestor gives the line.
	for p := path; p != ""; {
		if line, ok := l.lines[p]; ok {
			return &ConfigError{File: l.file, Line: line, Path: path, Msg: msg}
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return &ConfigError{File: l.file, Path: path, Msg: msg}
}

var yamlLineRe = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// yamlParserProblems are the problems yaml.v3's parser (not its scanner)
// reports. For those it prints the line of the collection being parsed,
// counted from 0, so the number is one early: they get one added, and
// say that the line is where the collection starts.
var yamlParserProblems = []string{
	"did not find expected node content", "did not find expected key", "did not find expected '-' indicator",
	"did not find expected ',' or ']'", "did not find expected ',' or '}'", "did not find expected <document start>",
	"found undefined tag handle", "found duplicate %YAML directive", "found incompatible YAML document",
	"found duplicate %TAG directive",
}

func yamlSyntaxError(file string, err error) *ConfigError {
	msg := err.Error()
	line := 0
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if slices.Contains(yamlParserProblems, msg) {
		line++
		msg += " (in the collection that starts on this line)"
	}
	return &ConfigError{File: file, Line: line, Msg: "invalid YAML: " + msg}
}

// ByteSize is a size in bytes that reads "512KiB", "64MB", "1GiB" or a plain
// number.
type ByteSize int64

// UnmarshalText parses a byte size.
func (s *ByteSize) UnmarshalText(b []byte) error {
	v, err := ParseByteSize(string(b))
	if err != nil {
		return err
	}
	*s = ByteSize(v)
	return nil
}

func (s ByteSize) String() string {
	for _, u := range []struct {
		n    int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if int64(s) >= u.n && int64(s)%u.n == 0 {
			return strconv.FormatInt(int64(s)/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

var byteSizeRe = regexp.MustCompile(`^\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B?|B)?\s*$`)

// ParseByteSize parses "512KiB", "64MB", "1GiB", "100" (bytes).
func ParseByteSize(s string) (int64, error) {
	m := byteSizeRe.FindStringSubmatch(strings.ToUpper(s))
	if m == nil {
		return 0, fmt.Errorf("want a size like 512KiB, 64MB or 1GiB, got %q", s)
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	unit := strings.TrimSuffix(m[2], "B")
	mult := map[string]float64{"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
		"KI": 1 << 10, "MI": 1 << 20, "GI": 1 << 30, "TI": 1 << 40}[unit]
	return int64(f * mult), nil
}

// ParseNodeConfig reads the config of one node, as it would stand under
// sources:, transforms: or sinks: NAME:, for tests and tools that build a
// single component. Errors name the file NAME.yaml and the lines of
// yamlText. A missing type is set to "unset".
func ParseNodeConfig(kind, name string, yamlText []byte) (*NodeConfig, error) {
	section := ""
	for _, s := range sections {
		if s.kind == kind {
			section = s.key
		}
	}
	if section == "" {
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	var probe map[string]any
	if err := yamlv3.Unmarshal(yamlText, &probe); err != nil {
		return nil, ConfigErrors{yamlSyntaxError(name+".yaml", err)}
	}
	var doc strings.Builder
	fmt.Fprintf(&doc, "%s:\n  %s:\n", section, name)
	for _, line := range strings.Split(strings.TrimRight(string(yamlText), "\n"), "\n") {
		doc.WriteString("    " + line + "\n")
	}
	if _, ok := probe["type"]; !ok {
		doc.WriteString("    type: unset\n")
	}
	cfg, err := LoadConfig(name+".yaml", []byte(doc.String()), LoadOptions{Environ: []string{}})
	if cfg != nil {
		// Report lines of yamlText, not of the wrapper.
		for p, line := range cfg.loc.lines {
			cfg.loc.lines[p] = max(line-2, 0)
		}
	}
	if err != nil {
		return nil, err
	}
	return cfg.Nodes[0], nil
}

// Global returns the top-level settings of the config the node belongs to.
func (nc *NodeConfig) Global() *Config { return nc.cfg }

// ReplaySources turns every flux source into a replay of path (a recorded
// journal, or embedded:scenario), keeping its cluster, include and
// user_lookup settings: dry-run --replay shows what the sinks of a real
// config would receive, on a machine without Flux. It returns the names of
// the sources it changed.
func (c *Config) ReplaySources(path string) []string {
	var names []string
	for _, nc := range c.Nodes {
		if nc.Kind != KindSource || nc.Type != "flux" {
			continue
		}
		raw := map[string]any{"path": []any{path}}
		for _, k := range []string{"cluster", "include", "user_lookup"} {
			if v, ok := nc.raw[k]; ok {
				raw[k] = v
			}
		}
		nc.Type, nc.raw = "replay", raw
		names = append(names, nc.Name)
	}
	return names
}
