// Package jobstate reduces the events of one Flux job into the job's
// snapshot (core.Job) after each event, following the rules of flux-core
// 0.88's job-list module (src/modules/job-list/job_state.c, job_data.c,
// job_util.c) and the Python JobInfo that `flux jobs --json` prints
// (src/bindings/python/flux/job/info.py). RULES.md lists every field with
// its source and the places where we deliberately differ.
//
// It also decodes the payloads of the job-manager.events-journal stream
// (ParseResponse). Both the Flux source and the replay source use it, so
// they derive the same records from the same journal.
package jobstate

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/fluxstream/fluxstream/core"
)

// Job states (RFC 21), as the flux_job_state_t bits.
const (
	stNew      = 1
	stDepend   = 2
	stPriority = 4
	stSched    = 8
	stRun      = 16
	stCleanup  = 32
	stInactive = 64
)

// State names as flux_job_statetostr(state, "L") prints them.
const (
	StateNew      = "NEW"
	StateDepend   = "DEPEND"
	StatePriority = "PRIORITY"
	StateSched    = "SCHED"
	StateRun      = "RUN"
	StateCleanup  = "CLEANUP"
	StateInactive = "INACTIVE"
)

// Result names as flux_job_resulttostr(result, "L") prints them.
const (
	ResultCompleted = "COMPLETED"
	ResultFailed    = "FAILED"
	ResultCanceled  = "CANCELED"
	ResultTimeout   = "TIMEOUT"
)

// UserIDUnknown is the userid before the submit event (FLUX_USERID_UNKNOWN).
const UserIDUnknown = 0xFFFFFFFF

func stateName(st uint8) string {
	switch st {
	case stNew:
		return StateNew
	case stDepend:
		return StateDepend
	case stPriority:
		return StatePriority
	case stSched:
		return StateSched
	case stRun:
		return StateRun
	case stCleanup:
		return StateCleanup
	case stInactive:
		return StateInactive
	}
	return ""
}

// State is the reduced state of one job. It is not safe for concurrent
// use; the snapshots it returns are.
type State struct {
	id  uint64
	job core.Job // the current snapshot, kept up to date by refresh

	state      uint8 // current state (one st* bit)
	statesMask uint8 // states entered (job-list's states_mask; a revert clears SCHED/PRIORITY)
	eventsMask uint8 // states seen through events (states_events_mask)

	userID        uint32
	urgency       int
	priority      int64
	submitVersion int // version in the submit context; -1 if absent
	tDepend       float64
	tRun          float64
	tCleanup      float64
	tInactive     float64

	waitStatus  int // -1 until finish
	success     bool
	excOccurred bool
	excSeverity int
	excType     string
	excNote     string
	result      string // set on INACTIVE

	// jobspec-derived (job-list's job->name ... job->ncores).
	jobspec      json.RawMessage
	name         string
	cwd          string
	queue        string
	project      string
	bank         string
	duration     float64 // -1: unknown
	ntasks       int     // -1: unknown
	ncores       int     // -1: unknown
	nnodes       int     // -1: unknown
	perNodeCount int     // ntasks = nnodes * this, once R is known
	perCoreCount int     // ntasks = ncores * this, once R is known
	requested    *core.Requested

	// R-derived.
	r          json.RawMessage
	rParsed    bool
	expiration float64 // -1: unknown
	ranks      string
	nodelist   string
	allocated  *core.Allocated

	deps     []string            // grudgeset: outstanding, in order added
	depsUsed map[string]struct{} // every description ever added

	ann    *node  // annotations, as a tree once a memo needs one
	annRaw []byte // annotations as received, while ann is not built

	invalidated bool
}

// New returns the state of job id before any event.
func New(id uint64) *State {
	s := &State{
		id:            id,
		state:         stNew,
		statesMask:    stNew,
		eventsMask:    stNew,
		userID:        UserIDUnknown,
		urgency:       -1,
		waitStatus:    -1,
		duration:      -1,
		ntasks:        -1,
		ncores:        -1,
		nnodes:        -1,
		expiration:    -1,
		submitVersion: 0, // as job-list's calloc: t_depend is t_submit until submit says otherwise
	}
	s.job.ID = id
	s.job.JobID = F58(id)
	s.refresh()
	return s
}

// ID returns the job id.
func (s *State) ID() uint64 { return s.id }

// Snapshot returns the job as of the last event applied. It is a copy;
// what it points to is never modified afterwards.
func (s *State) Snapshot() core.Job { return s.job }

// Jobspec returns the current jobspec (as set, with jobspec-update events
// applied), or nil. The bytes must not be modified.
func (s *State) Jobspec() json.RawMessage { return s.jobspec }

// R returns the current R (as set, with resource-update events applied),
// or nil. The bytes must not be modified.
func (s *State) R() json.RawMessage { return s.r }

// Invalidated reports whether the job got an invalidate event: its
// submission was rejected and Flux drops every trace of it.
func (s *State) Invalidated() bool { return s.invalidated }

// SetJobspec sets the job's jobspec (from a submit response or a backlog
// response) and derives name, queue, duration, ntasks, ... from it. It
// replaces a jobspec set before. An error says what could not be derived;
// the jobspec is kept and the fields derived before the failure stand.
func (s *State) SetJobspec(raw json.RawMessage) error {
	if kindOf(raw) != '{' || !validJSON(raw) {
		return fmt.Errorf("%s: jobspec: not a JSON object", s.who())
	}
	s.jobspec = raw
	err := s.parseJobspec()
	s.reapplyR()
	s.refresh()
	if err != nil {
		return fmt.Errorf("%s: %w", s.who(), err)
	}
	return nil
}

// SetR sets the job's R (from an alloc response or a backlog response).
// Like job-list, the R-derived fields (nnodes, ncores, nodelist, ranks,
// expiration, allocated) are derived once the job has entered RUN: now if
// it has, else on the alloc event.
func (s *State) SetR(raw json.RawMessage) error {
	if kindOf(raw) != '{' || !validJSON(raw) {
		return fmt.Errorf("%s: R: not a JSON object", s.who())
	}
	s.r = raw
	var err error
	if s.eventsMask&stRun != 0 {
		err = s.parseRfields()
	}
	s.refresh()
	if err != nil {
		return fmt.Errorf("%s: %w", s.who(), err)
	}
	return nil
}

// who names the job in errors: f58 and decimal id.
func (s *State) who() string { return fmt.Sprintf("job %s (%d)", s.job.JobID, s.id) }

// parseRfields is job-list's parse_R: on a bad R nothing changes.
func (s *State) parseRfields() error {
	ri, err := parseR(s.r)
	if err != nil {
		return err
	}
	s.rParsed = true
	s.expiration = ri.expiration
	s.nnodes = ri.nnodes
	if s.perNodeCount > 0 {
		s.ntasks = s.nnodes * s.perNodeCount
	}
	s.ranks = ri.ranks
	if ri.nodelistOK {
		s.nodelist = ri.nodelist
		s.ncores = ri.ncores
		if s.perCoreCount > 0 {
			s.ntasks = s.ncores * s.perCoreCount
		}
	}
	s.allocated = &core.Allocated{
		NNodes:     ri.nnodes,
		NCores:     ri.ncores,
		NGPUs:      ri.ngpus,
		Ranks:      ri.ranks,
		Nodelist:   ri.nodelist,
		StartTime:  ri.starttime,
		Expiration: ri.expiration,
	}
	return nil
}

// reapplyR re-derives the R fields after a jobspec was set while R is
// known (the backlog order is jobspec, then events; this only matters
// when a caller sets the jobspec late).
func (s *State) reapplyR() {
	if s.rParsed {
		_ = s.parseRfields()
	}
}

// Apply applies one event. A context that lacks what the event's rule
// needs gives an error naming the job, the event and the field; the event
// then changes nothing (job-list would stop at the same point), and the
// state stays usable. Events without a rule (start, release, prolog-*,
// ...) change nothing.
func (s *State) Apply(ev Event) error {
	if ev.Context != nil && (kindOf(ev.Context) != '{' || !validJSON(ev.Context)) {
		return fmt.Errorf("%s: %s event: context: not a JSON object", s.who(), ev.Name)
	}
	var err error
	switch ev.Name {
	case "submit":
		err = s.onSubmit(ev)
	case "validate":
		s.transition(stDepend, ev.Timestamp)
	case "invalidate":
		s.invalidated = true
	case "depend":
		s.transition(stPriority, ev.Timestamp)
	case "priority":
		err = s.onPriority(ev)
	case "alloc":
		// The alloc context carries annotations too; job-list takes
		// annotations only from annotations events.
		s.transition(stRun, ev.Timestamp)
	case "finish":
		err = s.onFinish(ev)
	case "clean":
		s.transition(stInactive, ev.Timestamp)
	case "urgency":
		err = s.onUrgency(ev)
	case "exception":
		err = s.onException(ev)
	case "annotations":
		err = s.onAnnotations(ev)
	case "jobspec-update":
		err = s.onJobspecUpdate(ev)
	case "resource-update":
		err = s.onResourceUpdate(ev)
	case "memo":
		err = s.onMemo(ev)
	case "dependency-add", "dependency-remove":
		err = s.onDependency(ev)
	case "flux-restart":
		s.revert(ev.Timestamp)
	default:
		return nil
	}
	s.refresh()
	if err != nil {
		return fmt.Errorf("%s: %s event: %w", s.who(), ev.Name, err)
	}
	return nil
}

// transition is job_transition_state without flags: a state already
// reached through an event is not entered again, except PRIORITY and
// SCHED, which may be re-entered.
func (s *State) transition(to uint8, ts float64) {
	if to&s.eventsMask != 0 && to != stPriority && to != stSched {
		return
	}
	s.eventsMask |= to
	s.enter(to, ts)
}

// enter is process_state_transition_update + update_job_state.
func (s *State) enter(to uint8, ts float64) {
	switch to {
	case stRun:
		if s.r != nil {
			_ = s.parseRfields() // a bad R was reported by SetR
		}
	case stInactive:
		s.result = ResultFailed
		switch {
		case s.success:
			s.result = ResultCompleted
		case s.excOccurred && s.excType == "cancel":
			s.result = ResultCanceled
		case s.excOccurred && s.excType == "timeout":
			s.result = ResultTimeout
		}
	}
	s.state = to
	switch to {
	case stDepend:
		s.tDepend = ts
	case stPriority:
		if s.job.TPriority == 0 {
			s.job.TPriority = ts
		}
	case stSched:
		if s.job.TSched == 0 {
			s.job.TSched = ts
		}
	case stRun:
		s.tRun = ts
	case stCleanup:
		s.tCleanup = ts
	case stInactive:
		s.tInactive = ts
	}
	s.statesMask |= to
}

// revert sends a job in SCHED back to PRIORITY (urgency, jobspec-update
// and flux-restart events; RFC 21). t_priority keeps its first value.
func (s *State) revert(ts float64) {
	s.eventsMask |= stPriority
	if s.state != stSched {
		return
	}
	s.statesMask &^= stSched | stPriority
	s.enter(stPriority, ts)
}

var submitFields = []string{"urgency", "userid", "version"}

func (s *State) onSubmit(ev Event) error {
	var f [3][]byte
	if err := ctxFields(ev, submitFields, f[:]); err != nil {
		return err
	}
	urgency, err := ctxInt("urgency", f[0], true)
	if err != nil {
		return err
	}
	userid, err := ctxInt("userid", f[1], true)
	if err != nil {
		return err
	}
	if userid < 0 || userid > UserIDUnknown {
		return fmt.Errorf("context.userid: %d is not a user id", userid)
	}
	version := int64(-1)
	if f[2] != nil {
		if version, err = ctxInt("version", f[2], true); err != nil {
			return err
		}
	}
	s.urgency = int(urgency)
	s.userID = uint32(userid)
	s.submitVersion = int(version)
	s.job.TSubmit = ev.Timestamp
	return nil
}

func (s *State) onPriority(ev Event) error {
	v, err := ctxField(ev, "priority")
	if err != nil {
		return err
	}
	p, ok := asInt(v)
	if !ok {
		return fieldErr("priority", v, "an integer")
	}
	s.priority = p
	// conditional: only a job in PRIORITY moves on to SCHED.
	s.eventsMask |= stSched
	if s.state == stPriority {
		s.enter(stSched, ev.Timestamp)
	}
	return nil
}

func (s *State) onFinish(ev Event) error {
	v, err := ctxField(ev, "status")
	if err != nil {
		return err
	}
	status, err := ctxInt("status", v, false)
	if err != nil {
		return err
	}
	s.waitStatus = int(status)
	// success needs status 0 and no fatal exception so far.
	if status == 0 && !(s.excOccurred && s.excSeverity == 0) {
		s.success = true
	}
	s.transition(stCleanup, ev.Timestamp)
	return nil
}

func (s *State) onUrgency(ev Event) error {
	v, err := ctxField(ev, "urgency")
	if err != nil {
		return err
	}
	u, err := ctxInt("urgency", v, false)
	if err != nil {
		return err
	}
	if u < 0 || u > 31 {
		return fmt.Errorf("context.urgency: %d is out of range 0..31", u)
	}
	s.urgency = int(u)
	s.revert(ev.Timestamp)
	return nil
}

var exceptionFields = []string{"type", "severity", "note"}

func (s *State) onException(ev Event) error {
	var f [3][]byte
	if err := ctxFields(ev, exceptionFields, f[:]); err != nil {
		return err
	}
	typ, err := ctxString("type", f[0])
	if err != nil {
		return err
	}
	sev, err := ctxInt("severity", f[1], true)
	if err != nil {
		return err
	}
	note, err := ctxString("note", f[2])
	if err != nil {
		return err
	}
	// The first exception counts, unless a later one is more severe.
	if !s.excOccurred || int(sev) < s.excSeverity {
		s.excOccurred = true
		s.excSeverity = int(sev)
		s.excType = typ
		s.excNote = note
	}
	if sev == 0 {
		s.transition(stCleanup, ev.Timestamp)
	}
	return nil
}

func (s *State) onAnnotations(ev Event) error {
	v, err := ctxField(ev, "annotations")
	if err != nil {
		return err
	}
	switch kindOf(v) {
	case 'n':
		s.ann, s.annRaw = nil, nil
	case '{':
		// Most jobs get annotations events and no memo: keep the bytes
		// and build a tree only when a memo merges into them.
		s.ann, s.annRaw = nil, v
		if len(v) <= 2 { // {}
			s.annRaw = nil
		}
	default:
		return fieldErr("annotations", v, "an object or null")
	}
	s.exportAnnotations()
	return nil
}

func (s *State) onMemo(ev Event) error {
	if ev.Context == nil {
		return fmt.Errorf("context: missing")
	}
	memo, err := parseTree(ev.Context)
	if err != nil {
		return fmt.Errorf("context: %v", err)
	}
	if s.ann == nil && s.annRaw != nil {
		if s.ann, err = parseTree(s.annRaw); err != nil {
			return fmt.Errorf("annotations: %v", err)
		}
		s.annRaw = nil
	}
	if s.ann == nil {
		s.ann = newObject()
	}
	if err := updatePath(s.ann, "user", memo); err != nil {
		return fmt.Errorf("context: %v", err)
	}
	clearNull(s.ann)
	if len(s.ann.obj) == 0 {
		s.ann = nil
	}
	s.exportAnnotations()
	return nil
}

// exportAnnotations publishes the annotations on the snapshot. As
// `flux jobs --json` does, annotations.user.uri becomes the uri field.
func (s *State) exportAnnotations() {
	s.job.URI = ""
	if s.ann == nil && s.annRaw != nil {
		if !bytes.Contains(s.annRaw, []byte(`"uri"`)) {
			s.job.Annotations = s.annRaw
			return
		}
		t, err := parseTree(s.annRaw)
		if err != nil {
			s.job.Annotations = s.annRaw
			return
		}
		s.ann, s.annRaw = t, nil
	}
	if s.ann == nil {
		s.job.Annotations = nil
		return
	}
	out := s.ann
	if user := s.ann.get("user"); user != nil && user.isObj {
		if u := user.get("uri"); u != nil {
			if uri, ok := asString(u.raw); ok && uri != "" && !u.isObj {
				s.job.URI = uri
				out = s.ann.clone()
				ouser := out.get("user")
				ouser.del("uri")
				if len(ouser.obj) == 0 {
					out.del("user")
				}
			}
		}
	}
	s.job.Annotations = out.bytes()
}

// onJobspecUpdate applies period-delimited paths to the jobspec
// (job_jobspec_update), re-derives the jobspec fields, and sends a job in
// SCHED back to PRIORITY. Keys outside resources, tasks and attributes, or
// paths that cannot be set, are skipped and reported, as job-list does.
func (s *State) onJobspecUpdate(ev Event) error {
	if ev.Context == nil {
		return fmt.Errorf("context: missing")
	}
	var skipped []string
	if s.jobspec != nil {
		root, err := parseTree(s.jobspec)
		if err != nil {
			return fmt.Errorf("stored jobspec: %v", err)
		}
		it := objIter{b: ev.Context, trusted: true}
		if err := it.open(); err != nil {
			return fmt.Errorf("context: %v", err)
		}
		for {
			k, v, ok, err := it.next()
			if err != nil {
				return fmt.Errorf("context: %v", err)
			}
			if !ok {
				break
			}
			key := k.String()
			val, err := parseTree(v)
			if err != nil || !jobspecKeyAllowed(key) || setPath(root, key, val) != nil {
				skipped = append(skipped, key)
			}
		}
		s.jobspec = root.bytes()
		_ = s.parseJobspec() // job-list ignores the result as well
	}
	// With no jobspec yet there is nothing to update (job-list logs it).
	s.revert(ev.Timestamp)
	if skipped != nil {
		return fmt.Errorf("context: keys not applied to the jobspec: %q", skipped)
	}
	return nil
}

func jobspecKeyAllowed(k string) bool {
	for _, p := range [...]string{"resources", "tasks", "attributes"} {
		if k == p || (len(k) > len(p) && k[:len(p)] == p && k[len(p)] == '.') {
			return true
		}
	}
	return false
}

// onResourceUpdate sets R's execution.expiration (the only key RFC 21
// allows) and re-derives the R fields (job_R_update).
func (s *State) onResourceUpdate(ev Event) error {
	var f [1][]byte
	if err := ctxFields(ev, []string{"expiration"}, f[:]); err != nil {
		return err
	}
	if f[0] == nil || s.r == nil {
		return nil // nothing it honors, or no R yet (job-list logs that)
	}
	root, err := parseTree(s.r)
	if err != nil {
		return fmt.Errorf("stored R: %v", err)
	}
	if setPath(root, "execution.expiration", &node{raw: f[0]}) != nil {
		return fmt.Errorf("context.expiration: R.execution is not an object")
	}
	// Keep the update only if R stays valid (job-list would keep a bad R
	// and its old fields; the fields are the same either way).
	old := s.r
	s.r = root.bytes()
	if err := s.parseRfields(); err != nil {
		s.r = old
		return fmt.Errorf("context.expiration: %v", err)
	}
	return nil
}

// onDependency keeps the grudgeset of dependencies: a description can be
// added once, ever; removing one that is absent is not an error.
func (s *State) onDependency(ev Event) error {
	v, err := ctxField(ev, "description")
	if err != nil {
		return err
	}
	desc, err := ctxString("description", v)
	if err != nil {
		return err
	}
	if ev.Name == "dependency-add" {
		if _, used := s.depsUsed[desc]; used {
			return nil
		}
		if s.depsUsed == nil {
			s.depsUsed = map[string]struct{}{}
		}
		s.depsUsed[desc] = struct{}{}
		s.setDeps(append(s.deps[:len(s.deps):len(s.deps)], desc))
		return nil
	}
	for i, d := range s.deps {
		if d == desc {
			nd := make([]string, 0, len(s.deps)-1)
			nd = append(nd, s.deps[:i]...)
			s.setDeps(append(nd, s.deps[i+1:]...))
			break
		}
	}
	return nil
}

func (s *State) setDeps(d []string) {
	if len(d) == 0 {
		d = nil
	}
	s.deps = d
	s.job.Dependencies = d
}

// Context helpers. Errors name the context key.

func ctxFields(ev Event, names []string, out [][]byte) error {
	if ev.Context == nil {
		return fmt.Errorf("context: missing")
	}
	if err := fields(ev.Context, names, out); err != nil {
		return fmt.Errorf("context: %v", err)
	}
	return nil
}

func ctxField(ev Event, name string) ([]byte, error) {
	var out [1][]byte
	if err := ctxFields(ev, []string{name}, out[:]); err != nil {
		return nil, err
	}
	if out[0] == nil {
		return nil, fmt.Errorf("context.%s: missing", name)
	}
	return out[0], nil
}

// ctxInt reads an integer that fits in a C int (jansson's "i").
func ctxInt(name string, v []byte, required bool) (int64, error) {
	if v == nil {
		if required {
			return 0, fmt.Errorf("context.%s: missing", name)
		}
		return 0, nil
	}
	n, ok := asInt(v)
	if !ok {
		return 0, fieldErr(name, v, "an integer")
	}
	if name != "userid" && (n < -1<<31 || n > 1<<31-1) {
		return 0, fmt.Errorf("context.%s: %d does not fit in an int", name, n)
	}
	return n, nil
}

func ctxString(name string, v []byte) (string, error) {
	if v == nil {
		return "", fmt.Errorf("context.%s: missing", name)
	}
	str, ok := asString(v)
	if !ok {
		return "", fieldErr(name, v, "a string")
	}
	return str, nil
}

func fieldErr(name string, v []byte, want string) error {
	return fmt.Errorf("context.%s: want %s, got %s", name, want, describe(v))
}
