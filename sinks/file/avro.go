package file

import (
	"bufio"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hamba/avro/v2"
	"github.com/hamba/avro/v2/ocf"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/durable"
	"github.com/fluxstream/fluxstream/schemas"
)

// avroWriter writes an Avro object container file (one per rotation)
// with the record schema of package schemas, deflate-compressed blocks.
// A batch ends a block, so after a crash every acknowledged batch is
// readable. Appending to an existing file continues it (same schema and
// sync marker).
type avroWriter struct {
	enc *ocf.Encoder
}

// errOtherSchema: the file is sound but holds another schema or codec, so
// it cannot be continued with today's records.
var errOtherSchema = errors.New("written with another schema or codec")

// A block ends at a flush, or at whichever of these comes first.
const (
	avroBlockRecords = 10000
	avroBlockBytes   = 4 << 20
)

func newAvroWriter(f durable.File, size int64) (recordWriter, error) {
	// One deflate block per batch (the sink flushes the encoder after
	// each), at the fastest level: at hamba's defaults (100 records a
	// block, level 6) compression took ~40% of a replay's CPU, and every
	// block allocates a new compressor.
	opts := []ocf.EncoderFunc{ocf.WithCompressionLevel(flate.BestSpeed),
		ocf.WithBlockLength(avroBlockRecords), ocf.WithBlockSize(avroBlockBytes),
		ocf.WithMetadata(map[string][]byte{"fluxstream.schema": []byte("org.fluxstream.Record")})}
	var w io.Writer = f
	var skip *headerSkipper
	if size > 0 {
		// Check the whole file ourselves (hamba does so only for an
		// *os.File) and continue it with its sync marker; the header the
		// encoder writes is already there.
		sync, err := checkContainer(f, size)
		if err != nil {
			return nil, fmt.Errorf("%s cannot be continued: %w", f.Name(), err)
		}
		opts = append(opts, ocf.WithSyncBlock(sync))
		skip = &headerSkipper{w: f}
		w = skip
	}
	enc, err := ocf.NewEncoderWithSchema(schemas.RecordSchema, w, opts...)
	if err != nil {
		return nil, err
	}
	if skip != nil {
		skip.done = true
	}
	return &avroWriter{enc: enc}, nil
}

// headerSkipper drops what is written until done: the encoder's header.
type headerSkipper struct {
	w    io.Writer
	done bool
}

func (h *headerSkipper) Write(p []byte) (int, error) {
	if !h.done {
		return len(p), nil
	}
	return h.w.Write(p)
}

// checkContainer reads an existing container file: today's schema and
// codec, and whole blocks up to the end. It returns the sync marker.
func checkContainer(f io.ReaderAt, size int64) ([16]byte, error) {
	var sync [16]byte
	r := &countingReader{r: bufio.NewReader(io.NewSectionReader(f, 0, size))}
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil || magic != [4]byte{'O', 'b', 'j', 1} {
		return sync, errors.New("not an Avro object container file")
	}
	meta, err := readMeta(r, size)
	if err != nil {
		return sync, fmt.Errorf("header: %w", err)
	}
	if _, err := io.ReadFull(r, sync[:]); err != nil {
		return sync, errors.New("header: no sync marker")
	}
	schema, err := avro.Parse(string(meta["avro.schema"]))
	if err != nil || schema.Fingerprint() != schemas.RecordSchema.Fingerprint() || string(meta["avro.codec"]) != string(ocf.Deflate) {
		return sync, errOtherSchema
	}
	for {
		at := r.n
		count, err := binary.ReadVarint(r) // Avro longs are zigzag varints
		if err == io.EOF {
			return sync, nil
		}
		n, err2 := binary.ReadVarint(r)
		if err != nil || err2 != nil || count < 0 || n < 0 || n > size-r.n {
			return sync, fmt.Errorf("damaged block at byte %d (a crash in the middle of a write?)", at)
		}
		if _, err := r.r.Discard(int(n)); err != nil {
			return sync, fmt.Errorf("torn block at byte %d", at)
		}
		r.n += n
		var mark [16]byte
		if _, err := io.ReadFull(r, mark[:]); err != nil || mark != sync {
			return sync, fmt.Errorf("torn block at byte %d", at)
		}
	}
}

// readMeta reads the header's map of bytes, no length beyond the file.
func readMeta(r *countingReader, size int64) (map[string][]byte, error) {
	meta := map[string][]byte{}
	read := func() ([]byte, error) {
		n, err := binary.ReadVarint(r)
		if err != nil || n < 0 || n > size-r.n {
			return nil, errors.New("bad length")
		}
		b := make([]byte, n)
		_, err = io.ReadFull(r, b)
		return b, err
	}
	for {
		count, err := binary.ReadVarint(r)
		if err != nil {
			return nil, err
		}
		if count == 0 {
			return meta, nil
		}
		if count < 0 { // a block with its byte size
			count = -count
			if _, err := binary.ReadVarint(r); err != nil {
				return nil, err
			}
		}
		if count > size-r.n {
			return nil, errors.New("bad count")
		}
		for range count {
			k, err := read()
			if err != nil {
				return nil, err
			}
			v, err := read()
			if err != nil {
				return nil, err
			}
			meta[string(k)] = v
		}
	}
}

// countingReader tracks the offset for messages and bounds.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	return k, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

func (a *avroWriter) write(_ io.Writer, r *core.Record) (int, error) {
	body, err := schemas.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", errUnencodable, r.ID, err)
	}
	// The encoder takes already-encoded datums through Write.
	return a.enc.Write(body)
}

func (a *avroWriter) flush(io.Writer) error { return a.enc.Flush() }

func (a *avroWriter) close(io.Writer) error { return a.enc.Close() }
