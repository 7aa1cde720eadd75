package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// StreamMagic opens every message on a connector stream. flux-core writes it
// in host byte order (12 00 ee ff on little-endian machines), then the
// message length big-endian.
const StreamMagic uint32 = 0xffee0012

// DefaultMaxMessage bounds one message read from a stream. A whole-job
// backlog response (eventlog + jobspec + R) is the largest thing we expect;
// anything past this is corruption or a hostile peer, and is refused before
// any allocation.
const DefaultMaxMessage = 64 << 20

const headerSize = 8

// ErrTooLarge is returned for a message longer than the reader's limit.
var ErrTooLarge = errors.New("flux message exceeds size limit")

// Reader reads framed messages from a connector stream.
type Reader struct {
	r      *bufio.Reader
	max    int
	offset int64 // stream offset of the next message, for error messages
	buf    []byte
}

// NewReader returns a Reader; maxSize <= 0 means DefaultMaxMessage.
func NewReader(r io.Reader, maxSize int) *Reader {
	if maxSize <= 0 {
		maxSize = DefaultMaxMessage
	}
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), max: maxSize}
}

// ReadRaw returns the next encoded message (without its stream header). The
// slice is valid until the next call. io.EOF means a clean end between
// messages; a stream cut inside a message is io.ErrUnexpectedEOF.
func (r *Reader) ReadRaw() ([]byte, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("flux stream at byte %d: header cut off: %w", r.offset, err)
		}
		return nil, err
	}
	if magic := binary.NativeEndian.Uint32(hdr[:4]); magic != StreamMagic {
		return nil, fmt.Errorf("flux stream at byte %d: bad magic 0x%08x, want 0x%08x (not a Flux connector stream?)", r.offset, magic, StreamMagic)
	}
	n := binary.BigEndian.Uint32(hdr[4:])
	if uint64(n) > uint64(r.max) {
		return nil, fmt.Errorf("flux stream at byte %d: %w: %d bytes announced, limit %d", r.offset, ErrTooLarge, n, r.max)
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("flux stream at byte %d: message of %d bytes cut off: %w", r.offset, n, err)
	}
	r.offset += headerSize + int64(n)
	return r.buf, nil
}

// ReadMessage reads and decodes the next message. Its Payload is a private
// copy, safe to keep.
func (r *Reader) ReadMessage() (Message, error) {
	start := r.offset
	raw, err := r.ReadRaw()
	if err != nil {
		return Message{}, err
	}
	own := make([]byte, len(raw))
	copy(own, raw)
	m, err := Decode(own)
	if err != nil {
		return Message{}, fmt.Errorf("flux stream at byte %d: %w", start, err)
	}
	return m, nil
}

// AppendFramed appends the stream header and the encoded message to b.
func AppendFramed(b []byte, m *Message) []byte {
	b = binary.NativeEndian.AppendUint32(b, StreamMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(m.EncodedSize()))
	return m.Append(b)
}

// WriteMessage writes one framed message to w in a single Write call, so
// that concurrent writers serialised by a mutex never interleave.
func WriteMessage(w io.Writer, m *Message) error {
	_, err := w.Write(AppendFramed(make([]byte, 0, headerSize+m.EncodedSize()), m))
	return err
}
