package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Spool entries hold a record in Avro binary (AppendAvro: fast both ways,
// half the size of JSON) plus what the record contract leaves out (an
// encoder's bytes). Version byte first, so the format can change without
// misreading old spools; the record comes last, so it needs no length.
const spoolEntryV1 = 1

func encodeSpoolEntry(r *Record, sizeHint int) []byte {
	b := make([]byte, 0, sizeHint)
	b = append(b, spoolEntryV1)
	if e := r.Encoded; e == nil {
		b = append(b, 0)
	} else {
		b = append(b, 1)
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
	return AppendAvro(b, r)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

var errShortEntry = errors.New("spool entry cut short")

func decodeSpoolEntry(b []byte) (*Record, error) {
	if len(b) == 0 || b[0] != spoolEntryV1 {
		return nil, fmt.Errorf("spool entry: unknown version")
	}
	d := entryDecoder{b: b[1:]}
	hasEnc := d.byte()
	var enc *Encoded
	if hasEnc == 1 {
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
	r, err := DecodeAvro(d.b)
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
