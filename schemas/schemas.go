// Package schemas holds the contracts of fluxstream's output: the Avro
// schema of a record (record.avsc, embedded) and its JSON form
// (record.md), and the codecs between records and Avro bytes: plain
// binary, Confluent wire format (magic 0, schema id) and Avro single-object
// encoding.
package schemas

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hamba/avro/v2"

	"github.com/fluxstream/fluxstream/core"
)

// RecordAVSC is the Avro schema of a record, as registered.
//
//go:embed record.avsc
var RecordAVSC string

// RecordSchema is RecordAVSC parsed.
var RecordSchema = avro.MustParse(RecordAVSC)

// api bounds what decoding may allocate from counts in the input: a
// string as large as a Flux message may be, arrays of a sane length.
var api = avro.Config{MaxByteSliceSize: 64 << 20, MaxSliceAllocSize: 1 << 16}.Freeze()

// Encodings of core.Encoded.Format.
const (
	FormatConfluent    = "avro-confluent"     // 0x00, 4-byte big-endian schema id, Avro binary
	FormatSingleObject = "avro-single-object" // C3 01, 8-byte CRC-64-AVRO fingerprint (LE), Avro binary
)

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
	return core.AppendAvro(make([]byte, 0, 512), r), nil
}

// AppendConfluent appends the Confluent wire format of r: magic byte 0,
// the schema id, the Avro body.
func AppendConfluent(dst []byte, schemaID int, r *core.Record) ([]byte, error) {
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(schemaID))
	return core.AppendAvro(dst, r), nil
}

// AppendSingleObject appends the Avro single-object encoding of r.
func AppendSingleObject(dst []byte, r *core.Record) ([]byte, error) {
	dst = append(dst, singleObjectHeader...)
	return core.AppendAvro(dst, r), nil
}

// Unmarshal decodes Avro binary written with RecordSchema.
func Unmarshal(b []byte) (*core.Record, error) {
	var a avroRecord
	if err := api.Unmarshal(RecordSchema, b, &a); err != nil {
		return nil, fmt.Errorf("decode avro record: %w", err)
	}
	if err := checkJSON(&a); err != nil {
		return nil, fmt.Errorf("decode avro record: %w", err)
	}
	r := fromAvro(&a)
	// Decoding serves readers of the JSON form; refuse what it cannot hold
	// (NaN, infinities from a foreign writer).
	if _, err := r.MarshalJSON(); err != nil {
		return nil, fmt.Errorf("decode avro record: no JSON form: %w", err)
	}
	return r, nil
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
