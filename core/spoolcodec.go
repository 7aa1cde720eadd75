package core

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/hamba/avro/v2"

	"github.com/fluxstream/fluxstream/schemas/avrorec"
)

// Spool entries hold a record in Avro binary (AppendAvro: fast both ways,
// half the size of JSON) plus what the record contract leaves out (an
// encoder's bytes). Version byte first, so the format can change without
// misreading old spools; the record comes last, so it needs no length.
//
// Each spool segment names the Avro schema its entries were written with
// (spoolMeta, in the segment header), so a spool written by an older
// fluxstream drains after an upgrade: its records are read through Avro
// schema resolution. Segments of the first milestone carry no schema; they
// were written with avrorec.V1.
//
// Version 2 entries hold a record that an encoder turned into its own Avro
// binary (Encoded.RecordAt > 0) once: the record is read back from the
// encoder's bytes, which were written with the same schema.
const (
	spoolEntryV1 = 1
	spoolEntryV2 = 2
)

// spoolMeta is the segment header of spools written now: the schema's
// Rabin fingerprint (8 bytes, big-endian), then the schema text.
var spoolMeta = binary.BigEndian.AppendUint64(nil, avrorec.Fingerprint(avrorec.Schema))

func init() { spoolMeta = append(spoolMeta, avrorec.AVSC...) }

// writerSchemas caches the schemas named by segment headers.
var writerSchemas sync.Map // string(meta) -> avro.Schema

// spoolWriterSchema returns the schema a segment's entries were written
// with.
func spoolWriterSchema(meta []byte) (avro.Schema, error) {
	if meta == nil {
		return avrorec.V1, nil
	}
	if bytes.Equal(meta, spoolMeta) {
		return avrorec.Schema, nil
	}
	if s, ok := writerSchemas.Load(string(meta)); ok {
		return s.(avro.Schema), nil
	}
	if len(meta) < 8 {
		return nil, fmt.Errorf("segment header: schema fingerprint cut short (%d bytes)", len(meta))
	}
	s, err := avro.Parse(string(meta[8:]))
	if err != nil {
		return nil, fmt.Errorf("segment header: writer schema: %w", err)
	}
	if got, want := avrorec.Fingerprint(s), binary.BigEndian.Uint64(meta[:8]); got != want {
		return nil, fmt.Errorf("segment header: writer schema has fingerprint %016x, header says %016x", got, want)
	}
	writerSchemas.Store(string(meta), s)
	return s, nil
}

// appendSpoolEntry appends r's spool entry to b.
func appendSpoolEntry(b []byte, r *Record) ([]byte, error) {
	e := r.Encoded
	once := e != nil && e.RecordAt > 0 && e.RecordAt < len(e.Value)
	if once {
		b = append(b, spoolEntryV2, 2)
	} else {
		b = append(b, spoolEntryV1)
	}
	if e == nil {
		b = append(b, 0)
	} else {
		if !once {
			b = append(b, 1)
		}
		b = appendBytes(b, []byte(e.Format))
		b = appendBytes(b, e.Value)
		b = binary.AppendUvarint(b, uint64(e.SchemaID))
		b = binary.AppendUvarint(b, uint64(len(e.Headers)))
		keys := make([]string, 0, len(e.Headers))
		for k := range e.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b = appendBytes(b, []byte(k))
			b = appendBytes(b, []byte(e.Headers[k]))
		}
	}
	if once {
		return binary.AppendUvarint(b, uint64(e.RecordAt)), nil
	}
	return AppendAvro(b, r)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

var errShortEntry = errors.New("spool entry cut short")

// decodeSpoolEntry decodes an entry of a segment whose header is meta.
func decodeSpoolEntry(b, meta []byte) (*Record, error) {
	if len(b) == 0 || b[0] != spoolEntryV1 && b[0] != spoolEntryV2 {
		return nil, fmt.Errorf("spool entry: unknown version")
	}
	d := entryDecoder{b: b[1:]}
	hasEnc := d.byte()
	switch {
	case b[0] == spoolEntryV1 && hasEnc > 1, b[0] == spoolEntryV2 && hasEnc != 2:
		return nil, fmt.Errorf("spool entry: version %d with encoding flag %d", b[0], hasEnc)
	}
	var enc *Encoded
	if hasEnc >= 1 {
		enc = &Encoded{Format: string(d.bytes()), Value: d.bytes()}
		enc.SchemaID = int(d.uvarint())
		if n := d.uvarint(); n > 0 && d.err == nil {
			enc.Headers = make(map[string]string, min(n, 64))
			for range n {
				k := string(d.bytes())
				enc.Headers[k] = string(d.bytes())
				if d.err != nil {
					break
				}
			}
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	body := d.b
	if hasEnc == 2 {
		at := d.uvarint()
		switch {
		case d.err != nil:
			return nil, d.err
		case len(d.b) != 0:
			return nil, fmt.Errorf("spool entry: %d bytes after the record offset", len(d.b))
		case at == 0 || at >= uint64(len(enc.Value)):
			return nil, fmt.Errorf("spool entry: record offset %d outside the %d encoded bytes", at, len(enc.Value))
		}
		enc.RecordAt = int(at)
		body = enc.Value[at:]
	}
	writer, err := spoolWriterSchema(meta)
	if err != nil {
		return nil, err
	}
	r, err := DecodeAvroFrom(writer, body)
	if err != nil {
		return nil, fmt.Errorf("spool entry: %w", err)
	}
	r.Encoded = enc
	return r, nil
}

type entryDecoder struct {
	b   []byte
	err error
}

func (d *entryDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShortEntry
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *entryDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShortEntry
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *entryDecoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errShortEntry
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}
