// Package wire encodes and decodes Flux messages (RFC 3) and the stream
// framing of the local:// connector, as flux-core 0.88 puts them on a unix
// socket. It has no I/O policy of its own: connectors build on it.
package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// MsgType is the RFC 3 message type.
type MsgType uint8

// Message types (RFC 3).
const (
	Request  MsgType = 0x01
	Response MsgType = 0x02
	Event    MsgType = 0x04
	Control  MsgType = 0x08
)

func (t MsgType) String() string {
	switch t {
	case Request:
		return "request"
	case Response:
		return "response"
	case Event:
		return "event"
	case Control:
		return "control"
	}
	return fmt.Sprintf("type(0x%02x)", uint8(t))
}

// Message flags (RFC 3).
const (
	FlagTopic      uint8 = 0x01
	FlagPayload    uint8 = 0x02
	FlagNoResponse uint8 = 0x04
	FlagRoute      uint8 = 0x08
	FlagUpstream   uint8 = 0x10
	FlagPrivate    uint8 = 0x20
	FlagStreaming  uint8 = 0x40
	FlagUser1      uint8 = 0x80
)

// Well-known field values.
const (
	UserIDUnknown uint32 = 0xffffffff // FLUX_USERID_UNKNOWN: the broker fills it in
	RoleNone      uint32 = 0
	RoleOwner     uint32 = 1
	RoleUser      uint32 = 4
	NodeIDAny     uint32 = 0xffffffff // FLUX_NODEID_ANY
	MatchtagNone  uint32 = 0
)

const (
	protoMagic   = 0x8e
	protoVersion = 0x01
	protoSize    = 20
	// A frame length byte of 0xff announces a 4-byte big-endian length.
	longFrame = 0xff
)

// Message is one decoded Flux message. Aux1 is the nodeid of a request, the
// errnum of a response, the sequence number of an event; Aux2 is the matchtag
// of requests and responses.
type Message struct {
	Type     MsgType
	Flags    uint8
	UserID   uint32
	Rolemask uint32
	Aux1     uint32
	Aux2     uint32
	Route    []string // route stack, oldest hop first; nil unless FlagRoute
	Topic    string
	Payload  []byte // as on the wire: a string payload keeps its NUL
}

// Matchtag of a request or response.
func (m *Message) Matchtag() uint32 { return m.Aux2 }

// Errnum of a response (0 = success).
func (m *Message) Errnum() uint32 { return m.Aux1 }

// Seq of an event.
func (m *Message) Seq() uint32 { return m.Aux1 }

// HasPayload reports whether the message carries a payload frame.
func (m *Message) HasPayload() bool { return m.Flags&FlagPayload != 0 }

// String returns the payload as text, without the NUL terminator that Flux
// appends to string and JSON payloads.
func (m *Message) String() string {
	return string(bytes.TrimSuffix(m.Payload, []byte{0}))
}

// JSON returns the payload bytes without the NUL terminator.
func (m *Message) JSON() []byte { return bytes.TrimSuffix(m.Payload, []byte{0}) }

// SetJSON sets a JSON (string) payload the way flux_msg_set_string does:
// the bytes followed by a NUL.
func (m *Message) SetJSON(b []byte) {
	p := make([]byte, len(b)+1)
	copy(p, b)
	m.Payload = p
	m.Flags |= FlagPayload
}

// Errors returned by Decode. They wrap more detail.
var (
	ErrTruncated = errors.New("flux message truncated")
	ErrMalformed = errors.New("malformed flux message")
)

// EncodedSize is the length of m once encoded (without stream framing).
func (m *Message) EncodedSize() int {
	n := 0
	if m.Flags&FlagRoute != 0 {
		for _, r := range m.Route {
			n += frameSize(len(r))
		}
		n += frameSize(0)
	}
	if m.Flags&FlagTopic != 0 {
		n += frameSize(len(m.Topic))
	}
	if m.Flags&FlagPayload != 0 {
		n += frameSize(len(m.Payload))
	}
	return n + frameSize(protoSize)
}

func frameSize(n int) int {
	if n < longFrame {
		return 1 + n
	}
	return 5 + n
}

// Append encodes m and appends it to b. The frames follow RFC 3's order:
// route stack and empty delimiter, topic, payload, then the proto frame.
func (m *Message) Append(b []byte) []byte {
	if m.Flags&FlagRoute != 0 {
		for _, r := range m.Route {
			b = appendFrame(b, []byte(r))
		}
		b = appendFrame(b, nil)
	}
	if m.Flags&FlagTopic != 0 {
		b = appendFrame(b, []byte(m.Topic))
	}
	if m.Flags&FlagPayload != 0 {
		b = appendFrame(b, m.Payload)
	}
	b = append(b, protoSize, protoMagic, protoVersion, byte(m.Type), m.Flags)
	b = binary.BigEndian.AppendUint32(b, m.UserID)
	b = binary.BigEndian.AppendUint32(b, m.Rolemask)
	b = binary.BigEndian.AppendUint32(b, m.Aux1)
	b = binary.BigEndian.AppendUint32(b, m.Aux2)
	return b
}

func appendFrame(b, frame []byte) []byte {
	if len(frame) < longFrame {
		b = append(b, byte(len(frame)))
	} else {
		b = append(b, longFrame)
		b = binary.BigEndian.AppendUint32(b, uint32(len(frame)))
	}
	return append(b, frame...)
}

// Decode parses one encoded message (without stream framing). The returned
// message's Payload aliases b.
func Decode(b []byte) (Message, error) {
	var frames [][]byte
	for off := 0; off < len(b); {
		n := int(b[off])
		off++
		if n == longFrame {
			if len(b)-off < 4 {
				return Message{}, fmt.Errorf("%w: frame %d: 4-byte length cut off at byte %d", ErrTruncated, len(frames), off)
			}
			n64 := uint64(binary.BigEndian.Uint32(b[off:]))
			off += 4
			if n64 > uint64(len(b)-off) {
				return Message{}, fmt.Errorf("%w: frame %d: length %d at byte %d exceeds the %d bytes left", ErrTruncated, len(frames), n64, off-5, len(b)-off)
			}
			n = int(n64)
		} else if n > len(b)-off {
			return Message{}, fmt.Errorf("%w: frame %d: length %d at byte %d exceeds the %d bytes left", ErrTruncated, len(frames), n, off-1, len(b)-off)
		}
		frames = append(frames, b[off:off+n:off+n])
		off += n
	}
	if len(frames) == 0 {
		return Message{}, fmt.Errorf("%w: no frames", ErrMalformed)
	}
	proto := frames[len(frames)-1]
	frames = frames[:len(frames)-1]
	if len(proto) != protoSize {
		return Message{}, fmt.Errorf("%w: last frame is %d bytes, want the %d-byte proto frame", ErrMalformed, len(proto), protoSize)
	}
	if proto[0] != protoMagic || proto[1] != protoVersion {
		return Message{}, fmt.Errorf("%w: proto frame starts %02x %02x, want magic %02x version %02x", ErrMalformed, proto[0], proto[1], protoMagic, protoVersion)
	}
	m := Message{
		Type:     MsgType(proto[2]),
		Flags:    proto[3],
		UserID:   binary.BigEndian.Uint32(proto[4:]),
		Rolemask: binary.BigEndian.Uint32(proto[8:]),
		Aux1:     binary.BigEndian.Uint32(proto[12:]),
		Aux2:     binary.BigEndian.Uint32(proto[16:]),
	}
	switch m.Type {
	case Request, Response, Event, Control:
	default:
		return Message{}, fmt.Errorf("%w: unknown message type 0x%02x", ErrMalformed, proto[2])
	}
	if m.Flags&FlagRoute != 0 {
		delim := -1
		for i, f := range frames {
			if len(f) == 0 {
				delim = i
				break
			}
		}
		if delim < 0 {
			return Message{}, fmt.Errorf("%w: route flag set but no empty route delimiter frame", ErrMalformed)
		}
		m.Route = make([]string, delim)
		for i := range delim {
			m.Route[i] = string(frames[i])
		}
		frames = frames[delim+1:]
	}
	if m.Flags&FlagTopic != 0 {
		if len(frames) == 0 {
			return Message{}, fmt.Errorf("%w: topic flag set but no topic frame", ErrMalformed)
		}
		m.Topic = string(frames[0])
		frames = frames[1:]
	}
	if m.Flags&FlagPayload != 0 {
		if len(frames) == 0 {
			return Message{}, fmt.Errorf("%w: payload flag set but no payload frame (topic %q)", ErrMalformed, m.Topic)
		}
		m.Payload = frames[0]
		frames = frames[1:]
	}
	if len(frames) != 0 {
		return Message{}, fmt.Errorf("%w: %d frame(s) not announced by flags 0x%02x (topic %q)", ErrMalformed, len(frames), m.Flags, m.Topic)
	}
	return m, nil
}
