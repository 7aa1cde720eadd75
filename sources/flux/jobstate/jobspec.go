package jobstate

// Jobspec-derived fields, in the order and with the failure points of
// parse_jobspec() in flux-core 0.88 src/modules/job-list/job_data.c and
// jj_get_counts_json() in src/common/libjob/jj.c. A failure stops the
// parse: fields set before it keep their new values, later ones their old
// values, as in job-list.

import (
	"fmt"
	"strings"

	"github.com/fluxstream/fluxstream/core"
)

var (
	jsTopFields  = []string{"attributes", "tasks", "version", "resources"}
	jsSysFields  = []string{"job", "cwd", "queue", "duration", "project", "bank", "shell"}
	jsTaskFields = []string{"command", "count"}
	jsVtxFields  = []string{"type", "count", "exclusive", "with"}
)

// jjCounts is flux-core's struct jj_counts.
type jjCounts struct {
	nnodes, nslots, slotSize, slotGPUs int
	exclusive                          bool
	duration                           float64
}

// parseJobspec derives name, cwd, queue, project, bank, duration, nnodes,
// ntasks, ncores and the Requested summary from s.jobspec.
func (s *State) parseJobspec() error {
	js := s.jobspec
	var top [4][]byte
	if err := fields(js, jsTopFields, top[:]); err != nil {
		return fmt.Errorf("jobspec: %v", err)
	}
	attrs, tasks := top[0], top[1]

	// parse_attributes_dict: attributes is required, system optional.
	if attrs == nil {
		return fmt.Errorf("jobspec.attributes: missing")
	}
	if kindOf(attrs) != '{' {
		return fmt.Errorf("jobspec.attributes: want an object, got %s", describe(attrs))
	}
	system, _ := field(attrs, "system")
	var sys [7][]byte
	if system != nil {
		if kindOf(system) != '{' {
			return fmt.Errorf("jobspec.attributes.system: want an object, got %s", describe(system))
		}
		if err := fields(system, jsSysFields, sys[:]); err != nil {
			return fmt.Errorf("jobspec.attributes.system: %v", err)
		}
	}
	name, err := jobName(sys[0], tasks)
	if err != nil {
		return err
	}
	s.name = name
	s.cwd, s.queue = "", ""
	if system != nil {
		var str [5]string
		for i, k := range []int{1, 2, 4, 5} { // cwd, queue, project, bank
			v := sys[k]
			if v == nil {
				continue
			}
			x, ok := asString(v)
			if !ok {
				return fmt.Errorf("jobspec.attributes.system.%s: want a string, got %s", jsSysFields[k], describe(v))
			}
			str[i] = x
		}
		if sys[3] == nil {
			return fmt.Errorf("jobspec.attributes.system.duration: missing")
		}
		d, ok := asNumber(sys[3])
		if !ok {
			return fmt.Errorf("jobspec.attributes.system.duration: want a number, got %s", describe(sys[3]))
		}
		s.cwd, s.queue, s.project, s.bank = str[0], str[1], str[2], str[3]
		s.duration = d
	}

	// jj_get_counts_json.
	var jj jjCounts
	if _, ok := asInt(top[2]); !ok {
		return fmt.Errorf("jobspec.version: want an integer, got %s", describe(top[2]))
	}
	if top[3] == nil {
		return fmt.Errorf("jobspec.resources: missing")
	}
	if system == nil || sys[3] == nil {
		return fmt.Errorf("jobspec.attributes.system.duration: missing")
	}
	jj.duration, _ = asNumber(sys[3])
	if err := jj.readLevel(top[3], 0, 1); err != nil {
		return err
	}
	if jj.nslots <= 0 {
		return fmt.Errorf("jobspec.resources: unable to determine slot count")
	}
	if jj.slotSize <= 0 {
		return fmt.Errorf("jobspec.resources: unable to determine slot size")
	}
	if jj.nnodes > 0 {
		jj.nslots *= jj.nnodes
	}
	s.requested = requested(&jj, tasks)

	// parse_jobspec_nnodes: a count from the jobspec, or wait for R.
	s.nnodes = -1
	if jj.nnodes > 0 {
		s.nnodes = jj.nnodes
	}

	// parse_jobspec_ntasks.
	var shell [1][]byte
	if v := sys[6]; v != nil {
		if kindOf(v) != '{' {
			return fmt.Errorf("jobspec.attributes.system.shell: want an object, got %s", describe(v))
		}
		opts, _ := field(v, "options")
		if opts != nil {
			if kindOf(opts) != '{' {
				return fmt.Errorf("jobspec.attributes.system.shell.options: want an object, got %s", describe(opts))
			}
			shell[0], _ = field(opts, "per-resource")
		}
	}
	if pr := shell[0]; pr != nil {
		typ, count, err := perResource(pr)
		if err != nil {
			return err
		}
		switch typ {
		case "node":
			if jj.nnodes > 0 {
				s.ntasks = jj.nnodes * count
			} else {
				s.perNodeCount, s.ntasks = count, -1
			}
			return s.jobspecNcores(&jj)
		case "core":
			if jj.nnodes == 0 {
				s.ntasks = jj.nslots * jj.slotSize * count
			} else {
				s.perCoreCount, s.ntasks = count, -1
			}
			return s.jobspecNcores(&jj)
		}
	}
	if total, ok := taskCount(tasks, "total"); ok {
		s.ntasks = total
	} else {
		s.ntasks = jj.nslots
	}
	return s.jobspecNcores(&jj)
}

// jobspecNcores is parse_jobspec_ncores: unknown until R for an exclusive
// node request.
func (s *State) jobspecNcores(jj *jjCounts) error {
	if jj.nnodes > 0 && jj.exclusive {
		s.ncores = -1
		return nil
	}
	s.ncores = jj.nslots * jj.slotSize
	return nil
}

// jobName is attributes.system.job.name, else the basename of the first
// task's command (parse_jobspec_job_name).
func jobName(job, tasks []byte) (string, error) {
	if job != nil {
		if kindOf(job) != '{' {
			return "", fmt.Errorf("jobspec.attributes.system.job: want an object, got %s", describe(job))
		}
		v, _ := field(job, "name")
		if v != nil {
			name, ok := asString(v)
			if !ok {
				return "", fmt.Errorf("jobspec.attributes.system.job.name: want a string, got %s", describe(v))
			}
			return name, nil
		}
	}
	task0, err := firstTask(tasks)
	if err != nil {
		return "", err
	}
	var f [2][]byte
	if err := fields(task0, jsTaskFields, f[:]); err != nil {
		return "", fmt.Errorf("jobspec.tasks[0]: %v", err)
	}
	if f[0] == nil {
		return "", fmt.Errorf("jobspec.tasks[0].command: missing")
	}
	it := arrIter{b: f[0], trusted: true}
	if it.open() != nil {
		return "", fmt.Errorf("jobspec.tasks[0].command: want an array, got %s", describe(f[0]))
	}
	arg0, ok, err := it.next()
	if err != nil || !ok {
		return "", fmt.Errorf("jobspec.tasks[0].command: empty")
	}
	path, ok := asString(arg0)
	if !ok {
		return "", fmt.Errorf("jobspec.tasks[0].command[0]: want a string, got %s", describe(arg0))
	}
	if i := strings.LastIndexByte(path, '/'); i >= 0 && i+1 < len(path) {
		return path[i+1:], nil
	}
	return path, nil
}

func firstTask(tasks []byte) ([]byte, error) {
	if tasks == nil {
		return nil, fmt.Errorf("jobspec.tasks: missing")
	}
	it := arrIter{b: tasks, trusted: true}
	if it.open() != nil {
		return nil, fmt.Errorf("jobspec.tasks: want an array, got %s", describe(tasks))
	}
	t, ok, err := it.next()
	if err != nil || !ok {
		return nil, fmt.Errorf("jobspec.tasks: empty")
	}
	if kindOf(t) != '{' {
		return nil, fmt.Errorf("jobspec.tasks[0]: want an object, got %s", describe(t))
	}
	return t, nil
}

// taskCount reads tasks[0].count.<key> as an integer.
func taskCount(tasks []byte, key string) (int, bool) {
	t, err := firstTask(tasks)
	if err != nil {
		return 0, false
	}
	c, _ := field(t, "count")
	if kindOf(c) != '{' {
		return 0, false
	}
	v, _ := field(c, key)
	n, ok := asInt(v)
	if !ok || n < -1<<31 || n >= 1<<31 {
		return 0, false
	}
	return int(n), true
}

func perResource(v []byte) (string, int, error) {
	if kindOf(v) != '{' {
		return "", 0, fmt.Errorf("jobspec per-resource: want an object, got %s", describe(v))
	}
	var f [2][]byte
	if err := fields(v, []string{"type", "count"}, f[:]); err != nil {
		return "", 0, err
	}
	typ, ok := asString(f[0])
	if !ok {
		return "", 0, fmt.Errorf("jobspec per-resource.type: want a string, got %s", describe(f[0]))
	}
	count := 1
	if f[1] != nil {
		n, ok := asInt(f[1])
		if !ok || n > 1<<31-1 {
			return "", 0, fmt.Errorf("jobspec per-resource.count: want an integer, got %s", describe(f[1]))
		}
		count = int(n)
	}
	if count < 1 {
		return "", 0, fmt.Errorf("jobspec per-resource.count: %d < 1", count)
	}
	return typ, count, nil
}

// readLevel walks one level of the resources tree (jj_read_level).
func (jj *jjCounts) readLevel(v []byte, level, nodefactor int) error {
	it := arrIter{b: v, trusted: true}
	if it.open() != nil {
		return fmt.Errorf("jobspec.resources: level %d: must be an array", level)
	}
	for {
		e, ok, err := it.next()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		if err := jj.readVertex(e, level, nodefactor); err != nil {
			return err
		}
	}
}

func (jj *jjCounts) readVertex(v []byte, level, nodefactor int) error {
	if kindOf(v) != '{' {
		return fmt.Errorf("jobspec.resources: level %d: want an object, got %s", level, describe(v))
	}
	var f [4][]byte
	if err := fields(v, jsVtxFields, f[:]); err != nil {
		return err
	}
	typ, ok := asString(f[0])
	if !ok {
		return fmt.Errorf("jobspec.resources: level %d: type: want a string, got %s", level, describe(f[0]))
	}
	n, ok := asInt(f[1])
	if !ok || n > 1<<31-1 || n < -1<<31 {
		return fmt.Errorf("jobspec.resources: level %d: count: want an integer, got %s", level, describe(f[1]))
	}
	count := int(n)
	exclusive := false
	if f[2] != nil {
		if exclusive, ok = asBool(f[2]); !ok {
			return fmt.Errorf("jobspec.resources: level %d: exclusive: want a boolean, got %s", level, describe(f[2]))
		}
	}
	if count <= 0 {
		return fmt.Errorf("jobspec.resources: invalid count %d for type %q", count, typ)
	}
	nodefactor *= count
	if nodefactor > 1<<31-1 {
		return fmt.Errorf("jobspec.resources: level %d: node count overflows", level)
	}
	switch typ {
	case "node":
		jj.nnodes = nodefactor
		if exclusive {
			jj.exclusive = true
		}
	case "slot":
		jj.nslots = count
	case "core":
		jj.slotSize = count
	case "gpu":
		jj.slotGPUs = count
	}
	if f[3] != nil {
		return jj.readLevel(f[3], level+1, nodefactor)
	}
	return nil
}

// requested builds the Requested summary (our addition, from jj's counts).
func requested(jj *jjCounts, tasks []byte) *core.Requested {
	r := &core.Requested{
		NNodes:    jj.nnodes,
		NSlots:    jj.nslots,
		SlotCores: jj.slotSize,
		SlotGPUs:  jj.slotGPUs,
		NCores:    jj.nslots * jj.slotSize,
		NGPUs:     jj.nslots * jj.slotGPUs,
		Exclusive: jj.exclusive,
		Duration:  jj.duration,
	}
	if n, ok := taskCount(tasks, "total"); ok {
		r.NTasks = n
	} else if n, ok := taskCount(tasks, "per_slot"); ok {
		r.NTasks = n * jj.nslots
	}
	return r
}
