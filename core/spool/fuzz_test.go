package spool

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"testing"
)

// encodeSegment is a segment as Append writes it.
func encodeSegment(version int, meta []byte, entries ...[]byte) []byte {
	var b []byte
	if version == 1 {
		b = []byte(magicV1)
	} else {
		b = encodeHeader(meta)
	}
	for _, e := range entries {
		var eh [entryHeader]byte
		binary.LittleEndian.PutUint32(eh[:4], uint32(len(e)))
		binary.LittleEndian.PutUint32(eh[4:], entryCRC(version, eh[:4], e))
		b = append(append(b, eh[:]...), e...)
	}
	return b
}

// The segment scanner takes any bytes without panicking or allocating
// beyond the input, and what it accepts is exactly a well-formed prefix:
// writing the entries it found again gives the bytes it consumed.
func FuzzScanSegment(f *testing.F) {
	v1, err := os.ReadFile("testdata/v1/00000000000000000000.seg")
	if err != nil {
		f.Fatal(err)
	}
	seeds := [][]byte{
		v1,
		v1[:20],
		encodeSegment(2, nil),
		encodeSegment(2, []byte(`{"type":"record"}`), []byte("a"), nil, []byte("ccc")),
		encodeSegment(2, []byte("m"), bytes.Repeat([]byte{7}, 300)),
		append(encodeSegment(2, []byte("m"), []byte("x")), make([]byte, 64)...),         // zero-filled tail
		append([]byte(magicV2), 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0),                     // huge meta length
		append(encodeSegment(2, nil), 0xff, 0xff, 0xff, 0x0f, 1, 2, 3, 4, 5),            // huge entry length
		append(encodeSegment(1, nil, []byte("ok")), 100, 0, 0, 0, 1, 2, 3, 4, 'x', 'y'), // torn tail
		make([]byte, 32),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var found [][]byte
		res := scanSegment(bufio.NewReader(bytes.NewReader(data)), int64(len(data)), func(e []byte) {
			found = append(found, bytes.Clone(e))
		})
		if res.tornHeader || res.badHeader != "" {
			if res.count != 0 || found != nil {
				t.Fatalf("entries from a segment without a header: %+v", res)
			}
			return
		}
		if res.end > int64(len(data)) || uint64(len(found)+len(res.damaged)) != res.count {
			t.Fatalf("end %d of %d bytes, %d entries visited and %d damaged, count %d", res.end, len(data), len(found), len(res.damaged), res.count)
		}
		if len(res.damaged) > 0 {
			return // a damaged entry does not re-encode to its bytes
		}
		if res.problem == "" && res.end != int64(len(data)) {
			t.Fatalf("stopped at %d of %d with no problem", res.end, len(data))
		}
		if again := encodeSegment(res.version, res.meta, found...); !bytes.Equal(again, data[:res.end]) {
			t.Fatalf("re-encoded %x\nconsumed   %x", again, data[:res.end])
		}
	})
}
