package where

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/fluxstream/fluxstream/core"
)

// Env is what an expression sees of a record, under the names of the
// record's JSON form (schemas/record.md). A field the record does not
// have is the zero value ("" , 0, false; event.context an empty map).
type Env struct {
	Kind    string `expr:"kind"` // event, purge, invalid
	ID      string `expr:"id"`
	Cluster string `expr:"cluster"`
	Source  string `expr:"source"`
	Event   Event  `expr:"event"`
	Job     Job    `expr:"job"`
	Purge   Purge  `expr:"purge"`
	// HasJob is false for purge and invalid records.
	HasJob bool `expr:"has_job"`
}

// Event is the record's event.
type Event struct {
	Name      string  `expr:"name"`
	Timestamp float64 `expr:"timestamp"`
	// Context is the event's context, decoded (numbers are float64); it is
	// only decoded when an expression reads it.
	Context map[string]any `expr:"context"`
}

// Job is the job snapshot.
type Job struct {
	ID           int       `expr:"id"`
	JobID        string    `expr:"jobid"`
	UserID       int       `expr:"userid"`
	Username     string    `expr:"username"`
	Urgency      int       `expr:"urgency"`
	Priority     int       `expr:"priority"`
	State        string    `expr:"state"`
	Result       string    `expr:"result"`
	Status       string    `expr:"status"`
	Name         string    `expr:"name"`
	Cwd          string    `expr:"cwd"`
	Queue        string    `expr:"queue"`
	Project      string    `expr:"project"`
	Bank         string    `expr:"bank"`
	NTasks       int       `expr:"ntasks"`
	NCores       int       `expr:"ncores"`
	NNodes       int       `expr:"nnodes"`
	Duration     float64   `expr:"duration"`
	Expiration   float64   `expr:"expiration"`
	Nodelist     string    `expr:"nodelist"`
	Ranks        string    `expr:"ranks"`
	Success      bool      `expr:"success"`
	WaitStatus   int       `expr:"waitstatus"`
	ReturnCode   int       `expr:"returncode"`
	Exception    Exception `expr:"exception"`
	TSubmit      float64   `expr:"t_submit"`
	TDepend      float64   `expr:"t_depend"`
	TPriority    float64   `expr:"t_priority"`
	TSched       float64   `expr:"t_sched"`
	TRun         float64   `expr:"t_run"`
	TCleanup     float64   `expr:"t_cleanup"`
	TInactive    float64   `expr:"t_inactive"`
	Runtime      float64   `expr:"runtime"`
	Dependencies []string  `expr:"dependencies"`
	URI          string    `expr:"uri"`
}

// Exception is the job's exception; occurred is false for none.
type Exception struct {
	Occurred bool   `expr:"occurred"`
	Severity int    `expr:"severity"`
	Type     string `expr:"type"`
	Note     string `expr:"note"`
}

// Purge is a purge record's part.
type Purge struct {
	Reason string  `expr:"reason"`
	Time   float64 `expr:"time"`
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

var emptyContext = map[string]any{}

// Parts of the environment, filled only when an expression reads them.
const (
	partTop = 1 << iota
	partEvent
	partContext
	partJob
	partPurge
)

// fill sets the parts of e that the expressions read; the others keep
// what an earlier record left, which no expression looks at. keys (when
// not nil) are the only context keys the expressions read, and own is a
// map of e's own to put them in.
func (e *Env) fill(r *core.Record, parts int, keys []string, own map[string]any) error {
	if parts&partTop != 0 {
		e.Kind, e.ID, e.Cluster, e.Source, e.HasJob = string(r.Kind), r.ID, r.Cluster, r.Source, r.Job != nil
	}
	if parts&(partEvent|partContext) != 0 {
		e.Event = Event{Context: emptyContext}
		if ev := r.Event; ev != nil {
			e.Event.Name, e.Event.Timestamp = ev.Name, ev.Timestamp
			if parts&partContext != 0 && len(ev.Context) > 0 {
				if err := e.fillContext(ev.Context, keys, own); err != nil {
					return fmt.Errorf("event.context: %w", err)
				}
			}
		}
	}
	if parts&partPurge != 0 {
		e.Purge = Purge{}
		if p := r.Purge; p != nil {
			e.Purge = Purge{Reason: p.Reason, Time: p.Time}
		}
	}
	if parts&partJob == 0 {
		return nil
	}
	j := r.Job
	if j == nil {
		e.Job = Job{}
		return nil
	}
	e.Job = Job{ID: int(j.ID), JobID: j.JobID, UserID: int(j.UserID), Username: j.Username, Urgency: j.Urgency,
		Priority: int(deref(j.Priority)), State: j.State, Result: j.Result, Status: j.Status,
		Name: j.Name, Cwd: j.Cwd, Queue: j.Queue, Project: j.Project, Bank: j.Bank,
		NTasks: deref(j.NTasks), NCores: deref(j.NCores), NNodes: deref(j.NNodes),
		Duration: deref(j.Duration), Expiration: j.Expiration, Nodelist: j.Nodelist, Ranks: j.Ranks,
		Success: deref(j.Success), WaitStatus: deref(j.WaitStatus), ReturnCode: deref(j.ReturnCode),
		TSubmit: j.TSubmit, TDepend: j.TDepend, TPriority: j.TPriority, TSched: j.TSched, TRun: j.TRun,
		TCleanup: j.TCleanup, TInactive: j.TInactive, Runtime: j.Runtime, Dependencies: j.Dependencies, URI: j.URI}
	if x := j.Exception; x != nil {
		e.Job.Exception = Exception{Occurred: true, Severity: x.Severity, Type: x.Type, Note: x.Note}
	}
	return nil
}

// DefaultMaxNodes bounds the size of an expression.
const DefaultMaxNodes = 1000

// Program is a compiled boolean expression over Env.
type Program struct {
	Source string
	prog   *vm.Program
	parts  int // what of Env it reads
	// ctxKeys are the only context keys it reads (nil: it may read any).
	ctxKeys []string
}

// uses notes the parts of Env an expression reads, and the context keys
// it names (event.context.KEY, event.context["KEY"]).
type uses struct {
	parts int
	keys  []string
	// The nodes that read event and event.context, and those of them
	// read through a literal member only: when every one is, only the
	// keys named need decoding.
	events, ctxs       []ast.Node
	eventsLit, ctxsLit map[ast.Node]bool
}

func (u *uses) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		switch n.Value {
		case "event":
			u.parts |= partEvent
			u.events = append(u.events, n)
		case "job":
			u.parts |= partJob
		case "purge":
			u.parts |= partPurge
		case "$env": // the whole record, by any name
			u.parts |= partTop | partEvent | partContext | partJob | partPurge
			u.events = append(u.events, n)
		default: // kind, id, cluster, source, has_job (and any other name: all of the top)
			u.parts |= partTop
		}
	case *ast.MemberNode:
		prop, lit := n.Property.(*ast.StringNode)
		if id, ok := n.Node.(*ast.IdentifierNode); ok && id.Value == "event" && lit {
			u.eventsLit[id] = true
			if prop.Value == "context" {
				u.parts |= partContext
				u.ctxs = append(u.ctxs, n)
			}
		}
		if c, ok := n.Node.(*ast.MemberNode); ok && u.isContext(c) && lit {
			u.ctxsLit[c] = true
			u.keys = append(u.keys, prop.Value)
		}
	}
}

func (u *uses) isContext(n *ast.MemberNode) bool {
	id, ok := n.Node.(*ast.IdentifierNode)
	p, lit := n.Property.(*ast.StringNode)
	return ok && id.Value == "event" && lit && p.Value == "context"
}

// contextKeys is what of the context the expression needs: nil for all
// of it (it reads the context whole, or by a computed key).
func (u *uses) contextKeys() []string {
	for _, n := range u.events {
		if !u.eventsLit[n] {
			u.parts |= partContext
			return nil
		}
	}
	for _, n := range u.ctxs {
		if !u.ctxsLit[n] {
			return nil
		}
	}
	slices.Sort(u.keys)
	return slices.Compact(u.keys)
}

// Compile compiles a boolean expression over Env, with at most maxNodes
// nodes. Errors are *file.Error (with a line and a column) where expr
// locates them.
func Compile(src string, maxNodes int) (*Program, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	use := &uses{eventsLit: map[ast.Node]bool{}, ctxsLit: map[ast.Node]bool{}}
	prog, err := expr.Compile(src, expr.Env(Env{}), expr.AsBool(), expr.MaxNodes(uint(maxNodes)), expr.Patch(use))
	if err != nil {
		return nil, err
	}
	p := &Program{Source: src, prog: prog}
	p.ctxKeys = use.contextKeys()
	p.parts = use.parts
	return p, nil
}

// ExprError turns a compile error into a config error at the node's key,
// with the line (for multi-line expressions) and column of the
// expression and a caret under the spot.
func ExprError(key string, err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		where := fmt.Sprintf("column %d", fe.Column+1)
		if fe.Line > 1 {
			where = fmt.Sprintf("line %d, column %d", fe.Line, fe.Column+1)
		}
		return core.Fieldf(key, "expression error at %s of the expression: %s%s", where, typeNames.Replace(fe.Message), fe.Snippet)
	}
	return core.Fieldf(key, "expression: %v", typeNames.Replace(err.Error()))
}

// typeNames shows the environment's Go types by their record paths.
var typeNames = strings.NewReplacer("type where.Env", "the record", "type where.Job", "job", "type where.Event", "event",
	"type where.Exception", "job.exception", "type where.Purge", "purge",
	"where.Env", "record", "where.Job", "job", "where.Event", "event", "where.Exception", "job.exception", "where.Purge", "purge")

// Evaluator runs programs on records; safe for concurrent use.
type Evaluator struct {
	parts int
	keys  []string // context keys to decode; nil: the whole context
	pool  sync.Pool
}

type scratch struct {
	env Env
	vm  vm.VM
	ctx map[string]any // the decoded keys, when only some are read
}

// NewEvaluator returns an evaluator for progs.
func NewEvaluator(progs ...*Program) *Evaluator {
	ev := &Evaluator{pool: sync.Pool{New: func() any { return &scratch{ctx: map[string]any{}} }}}
	someKeys := true
	for _, p := range progs {
		ev.parts |= p.parts
		if p.parts&partContext != 0 {
			if p.ctxKeys == nil {
				someKeys = false
			}
			ev.keys = append(ev.keys, p.ctxKeys...)
		}
	}
	if someKeys && ev.parts&partContext != 0 {
		slices.Sort(ev.keys)
		ev.keys = slices.Compact(ev.keys)
		if ev.keys == nil {
			ev.keys = []string{} // the context is read, no key of it
		}
	} else {
		ev.keys = nil
	}
	return ev
}

// Eval runs each program on r; fn gets each result in order.
func (ev *Evaluator) Eval(r *core.Record, progs []*Program, fn func(i int, ok bool)) error {
	s := ev.pool.Get().(*scratch)
	defer ev.pool.Put(s)
	if err := s.env.fill(r, ev.parts, ev.keys, s.ctx); err != nil {
		return err
	}
	for i, p := range progs {
		out, err := s.vm.Run(p.prog, &s.env)
		if err != nil {
			return fmt.Errorf("expression %q: %w", p.Source, err)
		}
		fn(i, out.(bool))
	}
	return nil
}
