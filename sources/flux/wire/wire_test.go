package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

const capturePath = "../../../testdata/flux/wire/local-connector-capture.bin"

func readCapture(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(capturePath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every message of the recorded local:// session decodes, and re-encodes to
// exactly the bytes flux-core put on the socket.
func TestCaptureRoundTrip(t *testing.T) {
	capture := readCapture(t)
	r := NewReader(bytes.NewReader(capture), 0)
	var out []byte
	counts := map[MsgType]int{}
	topics := map[string]int{}
	var msgs []Message
	for {
		m, err := r.ReadMessage()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("message %d: %v", len(msgs), err)
		}
		msgs = append(msgs, m)
		counts[m.Type]++
		topics[m.Topic]++
		out = AppendFramed(out, &m)
	}
	if !bytes.Equal(out, capture) {
		t.Fatalf("re-encoded capture differs (got %d bytes, want %d)", len(out), len(capture))
	}
	// 374 journal responses (sentinel + 373 events) + subscribe response +
	// the final ENODATA error; three requests; one event.
	if got, want := counts[Request], 3; got != want {
		t.Errorf("requests = %d, want %d", got, want)
	}
	if got, want := counts[Event], 1; got != want {
		t.Errorf("events = %d, want %d", got, want)
	}
	if got, want := topics["job-manager.events-journal"], 1+374+1; got != want {
		t.Errorf("journal messages = %d, want %d", got, want)
	}

	// Spot checks against the annotated hexdump.
	req := msgs[0]
	if req.Type != Request || req.Flags != 0x4b || req.UserID != UserIDUnknown || req.Rolemask != RoleNone ||
		req.Aux1 != NodeIDAny || req.Matchtag() != 1 || req.Topic != "job-manager.events-journal" ||
		req.String() != `{"full":true}` || len(req.Route) != 0 {
		t.Errorf("journal request decoded as %+v", req)
	}
	sentinel := msgs[3]
	if sentinel.Type != Response || sentinel.UserID != 6001 || sentinel.Rolemask != 5 || sentinel.Errnum() != 0 ||
		string(sentinel.JSON()) != `{"id":-1,"events":[]}` {
		t.Errorf("sentinel decoded as %+v", sentinel)
	}
	ev := msgs[356]
	if ev.Type != Event || ev.Seq() != 504 || ev.Topic != "job-purge-inactive" ||
		len(ev.Route) != 1 || ev.Route[0] != "d1789f5d-014b-45ae-aa01-bc7e018fede9" ||
		!strings.HasPrefix(ev.String(), `{"jobs":[349066756096,`) {
		t.Errorf("purge event decoded as %+v", ev)
	}
	last := msgs[len(msgs)-1]
	if last.Type != Response || last.Errnum() != 61 || last.HasPayload() || last.Matchtag() != 1 {
		t.Errorf("final ENODATA decoded as %+v", last)
	}
	cancel := msgs[378]
	if cancel.Type != Request || cancel.Flags&FlagNoResponse == 0 || cancel.String() != `{"matchtag": 1}` {
		t.Errorf("cancel decoded as %+v", cancel)
	}
}

func TestEncodeLongFrame(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 300)
	m := Message{Type: Response, Flags: FlagTopic | FlagPayload, Topic: "t", Payload: payload, Aux2: 7}
	b := m.Append(nil)
	if len(b) != m.EncodedSize() {
		t.Fatalf("EncodedSize %d, encoded %d", m.EncodedSize(), len(b))
	}
	// topic frame: 1+1; payload frame: 0xff + 4-byte length + 300 bytes.
	if b[2] != 0xff || binary.BigEndian.Uint32(b[3:]) != 300 {
		t.Fatalf("long frame header = % x", b[2:7])
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Payload, payload) || got.Matchtag() != 7 || got.Topic != "t" {
		t.Fatalf("decoded %+v", got)
	}
	// A 254-byte frame still uses the one-byte length.
	m.Payload = payload[:254]
	if b := m.Append(nil); b[2] != 254 {
		t.Fatalf("254-byte frame length byte = %x", b[2])
	}
}

func TestDecodeErrors(t *testing.T) {
	valid := (&Message{Type: Request, Flags: FlagTopic | FlagPayload | FlagRoute, Topic: "a.b", Payload: []byte("{}\x00")}).Append(nil)
	proto := valid[len(valid)-21:]
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "no frames"},
		{"short frame", []byte{5, 'a'}, "length 5 at byte 0 exceeds the 1 bytes left"},
		{"short long-length", []byte{0xff, 0, 0}, "4-byte length cut off"},
		{"long frame overrun", []byte{0xff, 0, 0, 1, 0, 'x'}, "length 256 at byte 0 exceeds"},
		{"no proto", []byte{1, 'x'}, "last frame is 1 bytes"},
		{"bad magic", append([]byte{20, 0x8f, 1}, proto[3:]...), "proto frame starts 8f 01"},
		{"bad version", append([]byte{20, 0x8e, 2}, proto[3:]...), "proto frame starts 8e 02"},
		{"bad type", append([]byte{20, 0x8e, 1, 0x03}, proto[4:]...), "unknown message type 0x03"},
		{"route without delimiter", append([]byte{1, 'x'}, proto...), "no empty route delimiter"},
		{"topic missing", append([]byte{0}, proto...), "topic flag set but no topic frame"},
		{"payload missing", append([]byte{0, 1, 'x'}, proto...), "payload flag set but no payload frame"},
		{"extra frame", append(append([]byte{}, valid[:len(valid)-21]...), append([]byte{1, 'z'}, proto...)...), "1 frame(s) not announced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestReaderLimits(t *testing.T) {
	m := Message{Type: Response, Flags: FlagTopic | FlagPayload, Topic: "t", Payload: bytes.Repeat([]byte("y"), 1000)}
	framed := AppendFramed(nil, &m)

	// Over the limit: refused from the header alone.
	_, err := NewReader(bytes.NewReader(framed), 100).ReadMessage()
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	// A 4 GiB announcement does not allocate.
	huge := binary.NativeEndian.AppendUint32(nil, StreamMagic)
	huge = binary.BigEndian.AppendUint32(huge, 0xffffffff)
	if _, err := NewReader(bytes.NewReader(huge), 0).ReadMessage(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	// Cut inside the body.
	_, err = NewReader(bytes.NewReader(framed[:50]), 0).ReadMessage()
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "cut off") {
		t.Fatalf("err = %v, want unexpected EOF", err)
	}
	// Cut inside the header.
	_, err = NewReader(bytes.NewReader(framed[:3]), 0).ReadMessage()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want unexpected EOF", err)
	}
	// Clean EOF between messages.
	if _, err := NewReader(bytes.NewReader(nil), 0).ReadMessage(); err != io.EOF {
		t.Fatalf("err = %v, want io.EOF", err)
	}
	// Wrong magic names the offset.
	two := append(append([]byte{}, framed...), 'G', 'E', 'T', ' ', 0, 0, 0, 0)
	r := NewReader(bytes.NewReader(two), 0)
	if _, err := r.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadMessage(); err == nil || !strings.Contains(err.Error(), "byte 1036: bad magic") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	capture := readCapture(f)
	r := NewReader(bytes.NewReader(capture), 0)
	for i := 0; ; i++ {
		raw, err := r.ReadRaw()
		if err != nil {
			break
		}
		if i < 12 || i%40 == 0 {
			f.Add(append([]byte(nil), raw...))
		}
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to something that decodes the same.
		again, err := Decode(m.Append(nil))
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if again.Type != m.Type || again.Flags != m.Flags || again.Topic != m.Topic ||
			!bytes.Equal(again.Payload, m.Payload) || len(again.Route) != len(m.Route) ||
			again.Aux1 != m.Aux1 || again.Aux2 != m.Aux2 {
			t.Fatalf("round trip changed %+v into %+v", m, again)
		}
	})
}

func FuzzReader(f *testing.F) {
	capture := readCapture(f)
	f.Add(capture[:2000])
	f.Add(capture[:8])
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b), 1<<16)
		for range 100 {
			if _, err := r.ReadMessage(); err != nil {
				return
			}
		}
	})
}

func BenchmarkDecodeCapture(b *testing.B) {
	capture := readCapture(b)
	b.SetBytes(int64(len(capture)))
	for b.Loop() {
		r := NewReader(bytes.NewReader(capture), 0)
		for {
			raw, err := r.ReadRaw()
			if err != nil {
				break
			}
			if _, err := Decode(raw); err != nil {
				b.Fatal(err)
			}
		}
	}
}
