// Package sdk is what the author of a fluxstream sink plugin imports: plain
// Go types and one call, ServeSink.
//
//	func main() { sdk.ServeSink(&MySink{}) }
//
// The plugin is a program of its own that fluxstream starts (sink type
// `plugin`). ServeSink speaks the go-plugin handshake and the sink
// protocol (plugins/proto) over gRPC with mutual TLS, exits when
// fluxstream dies, keeps stdout clean for the handshake (anything printed
// there goes to stderr) and sends logs to stderr, which fluxstream logs
// labelled with the node. See plugins/sdk/TUTORIAL.md.
package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"sort"
	"strings"
)

// Record is one record to deliver.
type Record struct {
	ID    string // idempotency key, stable across restarts: write by it to make redeliveries overwrite
	Key   string // partition / upsert key: the decimal job id
	Kind  string // "event", "purge" or "invalid"
	Event string // event name ("submit", "finish", ...), or the kind for other records
	// JSON is the record's JSON form, documented field by field in
	// schemas/record.md.
	JSON []byte
	// Encoded is set when an encoder transform (avro) ran before the sink.
	Encoded *Encoded
}

// Encoded is a record already turned into bytes by an encoder.
type Encoded struct {
	Format   string // e.g. "avro-confluent"
	Value    []byte
	SchemaID int
	Headers  map[string]string
}

// Info describes the plugin.
type Info struct {
	Name    string // short, e.g. "webhook"
	Version string // the plugin's own version
	Summary string // one line
	// ConfigSchema is a JSON Schema of the node's `config:` mapping, shown
	// by `fluxstream plugins`; optional.
	ConfigSchema string
}

// Config is the node's `config:` mapping.
type Config struct {
	Node    string // the node name, for messages
	Cluster string // the config's cluster, may be ""
	JSON    []byte // the mapping as a JSON object
}

// Decode fills v (a pointer to a struct with json tags) from the config,
// strictly: an unknown key or a value of the wrong type is an error naming
// the key.
func (c Config) Decode(v any) error {
	data := c.JSON
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return Fieldf(te.Field, "want %s, got %s", te.Type, te.Value)
	}
	if m, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return Fieldf(strings.Trim(m, `"`), "unknown key")
	}
	return Fieldf("", "%v", err)
}

// Sink is what a plugin implements.
type Sink interface {
	// Info describes the plugin; it is called before Configure.
	Info() Info
	// Configure checks and takes the node's config. Return Fieldf errors
	// (joined with errors.Join) to point at keys; any error stops
	// fluxstream's start with the messages.
	Configure(ctx context.Context, cfg Config) error
	// Write delivers a batch. Return nil once the destination has every
	// record; an error to retry the whole batch (Permanent(err) to
	// dead-letter it); or a *BatchError for per-record outcomes. Write is
	// not called concurrently. ctx ends when fluxstream gives up on the
	// call.
	Write(ctx context.Context, records []Record) error
}

// Flusher is implemented by sinks that hold data between writes.
type Flusher interface {
	Flush(ctx context.Context) error
}

// Closer is implemented by sinks with resources to release.
type Closer interface {
	Close(ctx context.Context) error
}

// HealthChecker is implemented by sinks that can tell whether they can
// deliver now (shown by `fluxstream plugins`).
type HealthChecker interface {
	Health(ctx context.Context) error
}

// BatchError gives per-record outcomes of a Write: records not named were
// delivered.
type BatchError struct {
	failed map[int]error
}

// Retry marks record i as not delivered: fluxstream retries it.
func (e *BatchError) Retry(i int, reason error) { e.set(i, reason) }

// Permanent marks record i as refused for good: fluxstream moves it to the
// sink's dead-letter file with the reason.
func (e *BatchError) Permanent(i int, reason error) { e.set(i, Permanent(reason)) }

func (e *BatchError) set(i int, err error) {
	if e.failed == nil {
		e.failed = map[int]error{}
	}
	if err == nil {
		err = errors.New("failed")
	}
	e.failed[i] = err
}

// Failed returns why record i failed, nil if it did not.
func (e *BatchError) Failed(i int) error { return e.failed[i] }

// ErrOrNil returns e if any record failed, else nil.
func (e *BatchError) ErrOrNil() error {
	if e == nil || len(e.failed) == 0 {
		return nil
	}
	return e
}

func (e *BatchError) Error() string {
	idx := make([]int, 0, len(e.failed))
	for i := range e.failed {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	if len(idx) == 0 {
		return "no record failed"
	}
	return fmt.Sprintf("%d record(s) failed, first (index %d): %v", len(idx), idx[0], e.failed[idx[0]])
}

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks an error that retrying cannot fix.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// FieldError points at one key of the config.
type FieldError struct {
	Key string // dotted path inside config:, "" for the whole mapping
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

// Logger returns the plugin's logger: JSON lines on stderr, which
// fluxstream re-logs at their level, labelled with the node.
func Logger() *slog.Logger { return logger }

var logger = slog.New(slog.NewJSONHandler(stderr(), &slog.HandlerOptions{Level: slog.LevelDebug}))

func stderr() io.Writer { return os.Stderr }

func init() {
	log.SetOutput(os.Stderr)
}
