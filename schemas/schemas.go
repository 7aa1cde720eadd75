// Package schemas holds the contracts of fluxstream's output: the Avro
// schema of a record (avrorec/record.avsc, embedded) and its JSON form
// (record.md), and the framings of Avro bytes: plain binary, Confluent
// wire format (magic 0, schema id) and Avro single-object encoding. The
// Avro codec itself is hamba/avro on the types generated in avrorec.
package schemas

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hamba/avro/v2"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/schemas/avrorec"
)

// RecordAVSC is the Avro schema of a record, as registered.
var RecordAVSC = avrorec.AVSC

// RecordSchema is RecordAVSC parsed.
var RecordSchema = avrorec.Schema

// DryRunSchemaID stands for the registry's schema id in a dry-run, which
// asks no registry. Sinks show it as "(registry id)".
const DryRunSchemaID = -1

// Encodings of core.Encoded.Format.
const (
	FormatConfluent    = "avro-confluent"     // 0x00, 4-byte big-endian schema id, Avro binary
	FormatSingleObject = "avro-single-object" // C3 01, 8-byte CRC-64-AVRO fingerprint (LE), Avro binary
)

// FramingLen is the length of format's framing before the Avro binary:
// 5 (Confluent), 10 (single-object), 0 for any other format.
func FramingLen(format string) int {
	switch format {
	case FormatConfluent:
		return 5
	case FormatSingleObject:
		return 2 + 8
	}
	return 0
}

// ContentType names an encoding for Kafka headers.
func ContentType(format string) string {
	switch format {
	case FormatConfluent:
		return "application/vnd.confluent.avro"
	case FormatSingleObject:
		return "application/vnd.apache.avro+binary"
	}
	return "application/octet-stream"
}

var singleObjectHeader = func() []byte {
	fp, err := RecordSchema.FingerprintUsing(avro.CRC64Avro)
	if err != nil {
		panic(err)
	}
	// The fingerprint is big-endian from hamba; the spec writes it
	// little-endian.
	h := []byte{0xc3, 0x01}
	for i := len(fp) - 1; i >= 0; i-- {
		h = append(h, fp[i])
	}
	return h
}()

// Fingerprint is the schema's CRC-64-AVRO fingerprint as single-object
// encoding writes it (little-endian).
func Fingerprint() []byte { return bytes.Clone(singleObjectHeader[2:]) }

// Marshal encodes a record as Avro binary (no framing).
func Marshal(r *core.Record) ([]byte, error) {
	return core.AppendAvro(make([]byte, 0, 512), r)
}

// AppendConfluent appends the Confluent wire format of r: magic byte 0,
// the schema id, the Avro body.
func AppendConfluent(dst []byte, schemaID int, r *core.Record) ([]byte, error) {
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(schemaID))
	return core.AppendAvro(dst, r)
}

// AppendSingleObject appends the Avro single-object encoding of r.
func AppendSingleObject(dst []byte, r *core.Record) ([]byte, error) {
	dst = append(dst, singleObjectHeader...)
	return core.AppendAvro(dst, r)
}

// Unmarshal decodes Avro binary written with RecordSchema.
func Unmarshal(b []byte) (*core.Record, error) { return UnmarshalFrom(nil, b) }

// UnmarshalFrom decodes Avro binary written with schema writer (nil: the
// current one; an older one is resolved to it). Unlike the spool's
// decoding it checks what a foreign writer may get wrong: JSON text
// fields must be JSON, and the record must have a JSON form.
func UnmarshalFrom(writer avro.Schema, b []byte) (*core.Record, error) {
	r, err := core.DecodeAvroFrom(writer, b)
	if err != nil {
		return nil, err
	}
	if err := checkJSON(r); err != nil {
		return nil, fmt.Errorf("decode avro record: %w", err)
	}
	// NaN and infinities have no JSON form.
	if _, err := r.MarshalJSON(); err != nil {
		return nil, fmt.Errorf("decode avro record: no JSON form: %w", err)
	}
	return r, nil
}

// checkJSON reports JSON text fields that are not JSON.
func checkJSON(r *core.Record) error {
	var errs []error
	check := func(name string, raw json.RawMessage) {
		if raw != nil && !json.Valid(raw) {
			errs = append(errs, fmt.Errorf("field %s: not JSON text", name))
		}
	}
	check("jobspec", r.Jobspec)
	check("R", r.R)
	if r.Event != nil {
		check("event.context", r.Event.Context)
	}
	for i := range r.Eventlog {
		check(fmt.Sprintf("eventlog[%d].context", i), r.Eventlog[i].Context)
	}
	if r.Job != nil {
		check("job.annotations", r.Job.Annotations)
	}
	return errors.Join(errs...)
}

// Decode decodes an encoded value back into a record. For the Confluent
// format the schema id is returned too; readers with a registry look the
// writer schema up by it, this one assumes RecordSchema.
func Decode(format string, b []byte) (*core.Record, int, error) {
	switch format {
	case FormatConfluent:
		if len(b) < 5 || b[0] != 0 {
			return nil, 0, errors.New("not Confluent wire format (want magic byte 0 and a schema id)")
		}
		r, err := Unmarshal(b[5:])
		return r, int(binary.BigEndian.Uint32(b[1:5])), err
	case FormatSingleObject:
		if !bytes.HasPrefix(b, singleObjectHeader[:2]) || len(b) < len(singleObjectHeader) {
			return nil, 0, errors.New("not Avro single-object encoding (want C3 01 and a fingerprint)")
		}
		if !bytes.Equal(b[2:10], singleObjectHeader[2:]) {
			return nil, 0, fmt.Errorf("schema fingerprint %x is not this schema's %x", b[2:10], singleObjectHeader[2:])
		}
		r, err := Unmarshal(b[10:])
		return r, 0, err
	}
	return nil, 0, fmt.Errorf("unknown encoding %q", format)
}

// DecodeToJSON turns encoded bytes back into the record's JSON form (for
// dry-run and tests).
func DecodeToJSON(e *core.Encoded) ([]byte, error) {
	r, _, err := Decode(e.Format, e.Value)
	if err != nil {
		return nil, err
	}
	return r.MarshalJSON()
}
