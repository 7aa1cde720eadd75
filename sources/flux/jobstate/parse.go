package jobstate

import (
	"encoding/json"
	"fmt"
)

// Event is one job event of the journal (an RFC 18 eventlog entry).
type Event struct {
	Timestamp float64         // seconds since the epoch
	Name      string          // e.g. "submit", "alloc", "exception"
	Context   json.RawMessage // the context object; nil when the event has none
}

// Response is one response payload of job-manager.events-journal:
// {"id":I,"events":[...],"jobspec"?:{...},"R"?:{...}}.
//
// Its raw fields (Jobspec, R, each Event.Context) are sub-slices of the
// payload given to ParseResponse: the payload must not be modified while
// they are in use.
type Response struct {
	ID      int64           // job id; -1 on the end-of-backlog sentinel
	Events  []Event         // in order; the whole eventlog in a backlog response
	Jobspec json.RawMessage // redacted jobspec (on submit, or with a backlog job); nil if absent
	R       json.RawMessage // R (on alloc, or with a backlog job); nil if absent
}

// SentinelID is the id of the response that ends the backlog
// (FLUX_JOBID_ANY as a signed integer).
const SentinelID = -1

// IsSentinel reports whether r is {"id":-1,"events":[]}, the end of the
// backlog.
func (r Response) IsSentinel() bool { return r.ID == SentinelID }

// ParseResponse decodes one events-journal response payload. It checks
// what Flux's own consumers require ("id" an integer, "events" an array
// of {"timestamp":number,"name":string,"context"?:object}, "jobspec" and
// "R" objects if present) and ignores unknown keys. A null jobspec, R or
// context counts as absent. Errors name the field and the event index.
func ParseResponse(b []byte) (Response, error) {
	var r Response
	it := objIter{b: b}
	if err := it.open(); err != nil {
		if i := skipSpace(b, 0); i >= len(b) {
			return r, fmt.Errorf("journal response: empty payload")
		}
		return r, fmt.Errorf("journal response: not a JSON object")
	}
	haveID, haveEvents := false, false
	for {
		k, v, ok, err := it.next()
		if err != nil {
			return r, fmt.Errorf("journal response: %w", err)
		}
		if !ok {
			break
		}
		switch {
		case k.is("id"):
			id, ok := asInt(v)
			if !ok {
				return r, fmt.Errorf("journal response: \"id\": want an integer, got %s", describe(v))
			}
			if id < SentinelID {
				return r, fmt.Errorf("journal response: \"id\": negative job id %d", id)
			}
			r.ID, haveID = id, true
		case k.is("events"):
			evs, err := parseEvents(v)
			if err != nil {
				return r, fmt.Errorf("journal response: %w", err)
			}
			r.Events, haveEvents = evs, true
		case k.is("jobspec"):
			raw, err := optObject(v, "jobspec")
			if err != nil {
				return r, fmt.Errorf("journal response: %w", err)
			}
			r.Jobspec = raw
		case k.is("R"):
			raw, err := optObject(v, "R")
			if err != nil {
				return r, fmt.Errorf("journal response: %w", err)
			}
			r.R = raw
		}
	}
	if i := skipSpace(b, it.i); i != len(b) {
		return r, fmt.Errorf("journal response: %w", synErr(i, "data after the object"))
	}
	if !haveID {
		return r, fmt.Errorf("journal response: \"id\" is missing")
	}
	if !haveEvents {
		return r, fmt.Errorf("journal response: \"events\" is missing")
	}
	return r, nil
}

func optObject(v []byte, name string) (json.RawMessage, error) {
	switch kindOf(v) {
	case '{':
		return v, nil
	case 'n':
		return nil, nil
	}
	return nil, fmt.Errorf("%q: want an object, got %s", name, describe(v))
}

func parseEvents(v []byte) ([]Event, error) {
	it := arrIter{b: v, trusted: true}
	if err := it.open(); err != nil {
		return nil, fmt.Errorf("\"events\": want an array, got %s", describe(v))
	}
	var evs []Event
	for n := 0; ; n++ {
		e, ok, err := it.next()
		if err != nil {
			return nil, fmt.Errorf("\"events\": %w", err)
		}
		if !ok {
			break
		}
		ev, err := parseEvent(e)
		if err != nil {
			return nil, fmt.Errorf("events[%d]%w", n, err)
		}
		if evs == nil {
			evs = make([]Event, 0, 1)
		}
		evs = append(evs, ev)
	}
	if evs == nil {
		evs = []Event{}
	}
	return evs, nil
}

// fieldError prefixes a field path; used as events[N]<fieldError>.
type fieldError struct {
	field string
	msg   string
}

func (e *fieldError) Error() string {
	if e.field == "" {
		return ": " + e.msg
	}
	return "." + e.field + ": " + e.msg
}

var eventFields = []string{"timestamp", "name", "context"}

func parseEvent(e []byte) (Event, error) {
	var ev Event
	if kindOf(e) != '{' {
		return ev, &fieldError{"", "want an object, got " + describe(e)}
	}
	var f [3][]byte
	if err := fields(e, eventFields, f[:]); err != nil {
		return ev, &fieldError{"", err.Error()}
	}
	switch {
	case f[0] == nil:
		return ev, &fieldError{"timestamp", "missing"}
	case f[1] == nil:
		return ev, &fieldError{"name", "missing"}
	}
	ts, ok := asNumber(f[0])
	if !ok {
		if kindOf(f[0]) == '0' {
			return ev, &fieldError{"timestamp", "number out of range"}
		}
		return ev, &fieldError{"timestamp", "want a number, got " + describe(f[0])}
	}
	if kindOf(f[1]) != '"' {
		return ev, &fieldError{"name", "want a string, got " + describe(f[1])}
	}
	ev.Timestamp = ts
	ev.Name = eventName(f[1][1 : len(f[1])-1])
	if c := f[2]; c != nil {
		switch kindOf(c) {
		case '{':
			ev.Context = c
		case 'n':
		default:
			return ev, &fieldError{"context", "want an object, got " + describe(c)}
		}
	}
	return ev, nil
}

// eventName returns the name, without allocating for the RFC 21 names.
func eventName(raw []byte) string {
	switch string(raw) {
	case "submit":
		return "submit"
	case "validate":
		return "validate"
	case "invalidate":
		return "invalidate"
	case "depend":
		return "depend"
	case "priority":
		return "priority"
	case "annotations":
		return "annotations"
	case "alloc":
		return "alloc"
	case "prolog-start":
		return "prolog-start"
	case "prolog-finish":
		return "prolog-finish"
	case "start":
		return "start"
	case "finish":
		return "finish"
	case "epilog-start":
		return "epilog-start"
	case "epilog-finish":
		return "epilog-finish"
	case "release":
		return "release"
	case "free":
		return "free"
	case "clean":
		return "clean"
	case "exception":
		return "exception"
	case "urgency":
		return "urgency"
	case "memo":
		return "memo"
	case "dependency-add":
		return "dependency-add"
	case "dependency-remove":
		return "dependency-remove"
	case "jobspec-update":
		return "jobspec-update"
	case "resource-update":
		return "resource-update"
	case "set-flags":
		return "set-flags"
	case "flux-restart":
		return "flux-restart"
	}
	for _, c := range raw {
		if c == '\\' {
			return unescape(raw)
		}
	}
	return string(raw)
}

// describe names the JSON type of v for error messages.
func describe(v []byte) string {
	switch kindOf(v) {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '0':
		if _, ok := asInt(v); ok {
			return "the integer " + string(v)
		}
		if len(v) > 24 {
			return "a number"
		}
		return "the number " + string(v)
	}
	return "nothing"
}
