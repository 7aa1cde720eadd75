package file

import (
	"errors"
	"io"
)

func newAvroWriter(io.Writer, int64) (recordWriter, error) {
	return nil, errors.New("format avro is not available yet")
}
