package file

import (
	"fmt"
	"io"
	"os"

	"github.com/hamba/avro/v2/ocf"

	"github.com/fluxstream/fluxstream/core"
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

func newAvroWriter(f *os.File, size int64) (recordWriter, error) {
	enc, err := ocf.NewEncoderWithSchema(schemas.RecordSchema, f, ocf.WithCodec(ocf.Deflate),
		ocf.WithMetadata(map[string][]byte{"fluxstream.schema": []byte("org.fluxstream.Record")}))
	if err != nil {
		if size > 0 {
			return nil, fmt.Errorf("%s is not an Avro container file of fluxstream records, or its end is damaged (move it away): %w", f.Name(), err)
		}
		return nil, err
	}
	return &avroWriter{enc: enc}, nil
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
