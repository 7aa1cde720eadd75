// Package avrorec is the Avro form of a fluxstream record: the schema
// (record.avsc, the one place it is written out), Go types generated from
// it, and the history of earlier versions, so that bytes written by an
// older fluxstream (spool segments, Kafka topics) are read with Avro
// schema resolution.
//
// It imports nothing of fluxstream: core converts its records to and from
// these types, schemas frames them for Kafka and files.
package avrorec

//go:generate go run github.com/hamba/avro/v2/cmd/avrogen@v2.31.0 -pkg avrorec -o record_gen.go -fullschema record.avsc

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hamba/avro/v2"
)

// AVSC is the current schema text, as registered with a schema registry.
//
//go:embed record.avsc
var AVSC string

// Schema is AVSC parsed.
var Schema = avro.MustParse(AVSC)

// v1AVSC is what fluxstream's first milestone wrote: its schema said int
// for counts, but its encoder wrote longs (no range check), so the history
// copy says long. Spool segments of that build carry no schema; this is
// their writer schema.
//
//go:embed history/record-v1.avsc
var v1AVSC string

// V1 is the first milestone's schema.
var V1 = avro.MustParse(v1AVSC)

// Fingerprint is the schema's 64-bit Rabin fingerprint (CRC-64-AVRO), the
// one Avro single-object encoding uses.
func Fingerprint(s avro.Schema) uint64 {
	fp, err := s.FingerprintUsing(avro.CRC64Avro)
	if err != nil {
		panic(err) // CRC-64-AVRO is always supported
	}
	return binary.BigEndian.Uint64(fp)
}

// Decoding bounds. A length field in the input can claim anything; a
// string or an array can never be longer than the input holding it, so
// the decoder is picked by input size and refuses larger claims before
// allocating.
var tiers = []int{64 << 10, 1 << 20, 16 << 20, 256 << 20}

type tier struct {
	api     avro.API
	readers sync.Pool
}

var tierAPIs = func() []*tier {
	out := make([]*tier, len(tiers))
	for i, n := range tiers {
		t := &tier{api: avro.Config{MaxByteSliceSize: n, MaxSliceAllocSize: n}.Freeze()}
		t.readers.New = func() any { return avro.NewReader(nil, 0, avro.WithReaderConfig(t.api)) }
		out[i] = t
	}
	return out
}()

var writers = sync.Pool{New: func() any {
	return avro.NewWriter(nil, 1024, avro.WithWriterConfig(tierAPIs[len(tierAPIs)-1].api))
}}

// Append appends the Avro binary encoding of rec to dst.
func Append(dst []byte, rec *Record) ([]byte, error) {
	w := writers.Get().(*avro.Writer)
	defer writers.Put(w)
	w.Reset(nil)
	w.Error = nil
	w.WriteVal(Schema, rec)
	if w.Error != nil {
		return dst, fmt.Errorf("encode avro record: %w", w.Error)
	}
	return append(dst, w.Buffer()...), nil
}

// Unmarshal decodes b, written with schema writer (nil: the current
// schema), into rec. Data of an older writer schema is read through Avro
// schema resolution (fields added since get their defaults, ints widen to
// longs).
func Unmarshal(writer avro.Schema, b []byte, rec *Record) error {
	var t *tier
	for i, n := range tiers {
		if len(b) <= n {
			t = tierAPIs[i]
			break
		}
	}
	if t == nil {
		return fmt.Errorf("avro record of %d bytes exceeds the %d-byte limit", len(b), tiers[len(tiers)-1])
	}
	s := Schema
	if writer != nil && writer != Schema {
		var err error
		if s, err = resolved(writer); err != nil {
			return err
		}
	}
	rd := t.readers.Get().(*avro.Reader)
	defer t.readers.Put(rd)
	rd.Reset(b)
	rd.Error = nil
	rd.ReadVal(s, rec)
	switch err := rd.Error; {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF):
		// hamba reports a record cut short as EOF (and its Unmarshal
		// hides it): for us it is damage.
		return fmt.Errorf("avro record cut short (%d bytes)", len(b))
	default:
		return fmt.Errorf("decode avro record: %w", err)
	}
}

var resolvedCache sync.Map // writer fingerprint -> avro.Schema

// resolved returns the schema that reads writer's data into the current
// types.
func resolved(writer avro.Schema) (avro.Schema, error) {
	fp := Fingerprint(writer)
	if s, ok := resolvedCache.Load(fp); ok {
		return s.(avro.Schema), nil
	}
	if fp == Fingerprint(Schema) {
		return Schema, nil
	}
	s, err := avro.NewSchemaCompatibility().Resolve(Schema, writer)
	if err != nil {
		return nil, fmt.Errorf("data written with schema %016x cannot be read as schema %016x: %w", fp, Fingerprint(Schema), err)
	}
	resolvedCache.Store(fp, s)
	return s, nil
}
