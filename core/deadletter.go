package core

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// deadLetters is a node's dead-letter file, DATA_DIR/deadletter/NODE.jsonl:
// one JSON line per record that could not go on, with the reason. A line
// is fsynced before the record counts as handled, so a record is never
// acknowledged into nowhere; when the file cannot be written the caller
// keeps the record (and says so).
type deadLetters struct {
	path string
	node string
	mu   sync.Mutex
	f    *os.File
}

func newDeadLetters(dataDir, node string) *deadLetters {
	return &deadLetters{path: filepath.Join(dataDir, "deadletter", node+".jsonl"), node: node}
}

// deadLetter is one line of the file. Record is the record's JSON form;
// an entry that never decoded into a record has Raw (its bytes, base64)
// and Where (spool segment and entry) instead.
type deadLetter struct {
	Time   string          `json:"time"`
	Node   string          `json:"node"`
	Error  string          `json:"error"`
	Where  string          `json:"where,omitempty"`
	Record json.RawMessage `json:"record,omitempty"`
	Raw    []byte          `json:"raw,omitempty"`
}

// add appends and fsyncs lines; nil means every one is durable.
func (d *deadLetters) add(lines ...deadLetter) error {
	var buf []byte
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for _, l := range lines {
		l.Time, l.Node = now, d.node
		b, err := json.Marshal(l)
		if err != nil {
			return fmt.Errorf("dead-letter %s: %w", d.path, err)
		}
		buf = append(append(buf, b...), '\n')
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		if err := os.MkdirAll(filepath.Dir(d.path), 0o700); err != nil {
			return fmt.Errorf("dead-letter directory: %w", err)
		}
		f, err := os.OpenFile(d.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("dead-letter file: %w", err)
		}
		d.f = f
	}
	if _, err := d.f.Write(buf); err != nil {
		return d.fail(fmt.Errorf("write dead-letter file %s: %w", d.path, err))
	}
	if err := d.f.Sync(); err != nil {
		return d.fail(fmt.Errorf("fsync dead-letter file %s: %w", d.path, err))
	}
	return nil
}

// fail closes the file after an error: the next add reopens it, and its
// lines may repeat some of this one (at-least-once here too).
func (d *deadLetters) fail(err error) error {
	d.f.Close()
	d.f = nil
	return err
}

// record builds the line of a record refused with reason.
func recordLetter(r *Record, reason error) deadLetter {
	js, err := r.JSON()
	if err != nil {
		return deadLetter{Error: reason.Error() + "; and the record has no JSON form: " + err.Error(), Where: "record " + r.ID}
	}
	return deadLetter{Error: reason.Error(), Record: js}
}

func (d *deadLetters) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}
