package jobsfmt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fluxstream/fluxstream/sinks/jobdb"
)

// Env is what formatting depends on beyond the job: the clock (running
// jobs' runtime, remaining time), the local time zone (!d), how user ids
// become names, and the f58 prefix.
type Env struct {
	Now      time.Time
	Location *time.Location
	// Username resolves a uid for jobs archived without a user name; nil
	// prints the number.
	Username func(uid uint32) string
	// F58Prefix is "ƒ" (flux in a UTF-8 locale) or "f".
	F58Prefix string
}

// DefaultEnv is the live environment: the wall clock, the local zone,
// NSS lookups, and ƒ in UTF-8 locales (as flux, unless
// FLUX_F58_FORCE_ASCII is set).
func DefaultEnv() Env {
	return Env{Now: time.Now(), Location: time.Local, Username: LookupUser, F58Prefix: LocalePrefix()}
}

// LocalePrefix is the f58 prefix flux prints here.
func LocalePrefix() string {
	if os.Getenv("FLUX_F58_FORCE_ASCII") != "" {
		return "f"
	}
	for _, k := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if v := os.Getenv(k); v != "" {
			u := strings.ToUpper(v)
			if (strings.Contains(u, "UTF-8") || strings.Contains(u, "UTF8")) && !strings.HasPrefix(u, "C.") {
				return "ƒ"
			}
			return "f"
		}
	}
	return "f"
}

var userCache sync.Map

// LookupUser is flux's get_username: the NSS name, or the number.
func LookupUser(uid uint32) string {
	if v, ok := userCache.Load(uid); ok {
		return v.(string)
	}
	name := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	userCache.Store(uid, name)
	return name
}

// Info is one job as flux's JobInfo sees it.
type Info struct {
	*jobdb.Job
	env     *Env
	ann     map[string]any
	annDone bool
}

// NewInfo wraps an archived job.
func NewInfo(j *jobdb.Job, env *Env) *Info { return &Info{Job: j, env: env} }

// annotations decodes the job's annotations when a field first needs
// them (most formats do not: listing 1000 jobs need not decode them).
func (in *Info) annotations() map[string]any {
	if !in.annDone {
		in.annDone = true
		if len(in.Annotations) > 0 {
			d := json.NewDecoder(bytes.NewReader(in.Annotations))
			d.UseNumber()
			d.Decode(&in.ann)
		}
	}
	return in.ann
}

func (in *Info) active() bool { return in.State != "INACTIVE" && in.State != "" }

var stateAbbrev = map[string]string{"NEW": "N", "DEPEND": "D", "PRIORITY": "P", "SCHED": "S", "RUN": "R", "CLEANUP": "C", "INACTIVE": "I"}
var resultAbbrev = map[string]string{"COMPLETED": "CD", "FAILED": "F", "CANCELED": "CA", "TIMEOUT": "TO"}

func optInt(p *int) value {
	if p == nil {
		return str("")
	}
	return integer(int64(*p))
}

func (in *Info) username() string {
	if in.Username != "" {
		return in.Username
	}
	if in.env.Username != nil {
		return in.env.Username(in.UserID)
	}
	return strconv.FormatUint(uint64(in.UserID), 10)
}

func (in *Info) runtime() float64 {
	switch {
	case in.TCleanup > 0 && in.TRun > 0:
		return in.TCleanup - in.TRun
	case in.TRun > 0:
		return float64(in.env.Now.UnixNano())/1e9 - in.TRun
	}
	return 0
}

func (in *Info) status(abbrev bool) string {
	if in.State == "INACTIVE" {
		if abbrev {
			return resultAbbrev[in.Result]
		}
		return in.Result
	}
	if abbrev {
		return stateAbbrev[in.State]
	}
	return in.State
}

// returncode is JobInfo.returncode: "" while unknown.
func (in *Info) returncode() value {
	if in.WaitStatus == nil {
		switch in.Result {
		case "CANCELED":
			return integer(-128)
		case "FAILED":
			return integer(1)
		}
		return str("")
	}
	ws := *in.WaitStatus
	switch {
	case ws&0x7f != 0 && ws&0x7f != 0x7f: // WIFSIGNALED
		return integer(int64(-(ws & 0x7f)))
	case ws&0x7f == 0: // WIFEXITED
		return integer(int64((ws >> 8) & 0xff))
	}
	return str("")
}

// dependencies is flux's DependencyList: begin-time=T shows as begin@HH:MM.
func (in *Info) dependencies() string {
	out := make([]string, 0, len(in.Dependencies))
	for _, d := range in.Dependencies {
		if ts, ok := strings.CutPrefix(d, "begin-time="); ok {
			if f, err := strconv.ParseFloat(ts, 64); err == nil {
				t := unixTime(f).In(in.env.Location)
				now := in.env.Now.In(in.env.Location)
				if t.YearDay() == now.YearDay() && t.Year() == now.Year() {
					d = "begin@" + t.Format("15:04")
				} else {
					d = "begin@" + t.Format("Jan02-15:04")
				}
				if t.Second() > 0 {
					d += t.Format(":05")
				}
			}
		}
		out = append(out, d)
	}
	return strings.Join(out, ",")
}

func unixTime(f float64) time.Time {
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9))
}

func (in *Info) annotation(path []string) (any, bool) {
	var cur any = in.annotations()
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func jsonValue(v any) value {
	switch x := v.(type) {
	case string:
		return str(x)
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return integer(i)
		}
		f, _ := x.Float64()
		return float(f)
	case bool:
		return boolean(x)
	case nil:
		return str("None")
	}
	return str(pyJSON(v))
}

// contextualInfo is JobInfo.contextual_info.
func (in *Info) contextualInfo() string {
	switch in.State {
	case "PRIORITY":
		return "priority-wait"
	case "DEPEND":
		return "depends:" + in.dependencies()
	case "SCHED":
		if v, ok := in.annotation([]string{"sched", "t_estimate"}); ok {
			if n, ok := v.(json.Number); ok {
				f, _ := n.Float64()
				eta := f - float64(in.env.Now.UnixNano())/1e9
				if eta < 0 {
					return "eta:now"
				}
				return "eta:" + fsd(eta)
			}
		}
		if in.Urgency == 0 {
			return "held"
		}
		if in.Priority != nil && *in.Priority == 0 {
			return "priority-hold"
		}
		return ""
	}
	return in.Nodelist
}

// contextualTime is JobInfo.contextual_time.
func (in *Info) contextualTime() value {
	switch in.State {
	case "PRIORITY", "DEPEND", "SCHED":
		return in.duration()
	}
	return float(in.runtime())
}

func (in *Info) duration() value {
	if in.Duration == nil {
		return float(0)
	}
	return float(*in.Duration)
}

var signalNames = map[int]string{
	1: "Hangup", 2: "Interrupt", 3: "Quit", 4: "Illegal instruction", 5: "Trace/breakpoint trap",
	6: "Aborted", 7: "Bus error", 8: "Floating point exception", 9: "Killed", 10: "User defined signal 1",
	11: "Segmentation fault", 12: "User defined signal 2", 13: "Broken pipe", 14: "Alarm clock",
	15: "Terminated", 16: "Stack fault", 17: "Child exited", 18: "Continued", 19: "Stopped (signal)",
	20: "Stopped", 21: "Stopped (tty input)", 22: "Stopped (tty output)", 23: "Urgent I/O condition",
	24: "CPU time limit exceeded", 25: "File size limit exceeded", 26: "Virtual timer expired",
	27: "Profiling timer expired", 28: "Window changed", 29: "I/O possible", 30: "Power failure",
	31: "Bad system call",
}

// inactiveReason is JobInfo.inactive_reason.
func (in *Info) inactiveReason() string {
	if in.State != "INACTIVE" {
		return ""
	}
	exc := in.Exception
	rc := in.returncode()
	switch in.Result {
	case "CANCELED":
		if exc != nil && exc.Type == "cancel" && exc.Note != "" {
			return "Canceled: " + exc.Note
		}
		return "Canceled"
	case "FAILED":
		if exc != nil && exc.Type != "exec" && exc.Severity == 0 {
			note := ""
			if exc.Note != "" {
				note = " note=" + exc.Note
			}
			return "Exception: type=" + exc.Type + note
		}
		code := rc.i
		switch {
		case rc.k != kInt:
			return "Exit " + rc.String()
		case code > 128:
			if s, ok := signalNames[int(code-128)]; ok {
				return s
			}
			return fmt.Sprintf("Signaled %d", code-128)
		case code == 126:
			return "Command invoked cannot execute"
		case code == 127:
			return "command not found"
		case code == 128:
			return "Invalid argument to exit"
		}
		return "Exit " + rc.String()
	case "TIMEOUT":
		return "Timeout"
	}
	return "Exit " + rc.String()
}

// Field returns the value of a format field, or an error for a field
// this formatter does not know.
func (in *Info) field(name string) (value, error) {
	switch name {
	case "id":
		return value{k: kInt, i: int64(in.ID), strOverride: in.env.F58Prefix + strings.TrimPrefix(in.JobID, "f")}, nil
	case "id.dec":
		return str(strconv.FormatUint(in.ID, 10)), nil
	case "id.hex":
		return str(fmt.Sprintf("0x%x", in.ID)), nil
	case "id.f58":
		return str(in.env.F58Prefix + strings.TrimPrefix(in.JobID, "f")), nil
	case "id.f58plain":
		return str("f" + strings.TrimPrefix(in.JobID, "f")), nil
	case "id.dothex":
		return str(dothex(in.ID)), nil
	case "id.kvs":
		return str("job." + dothex(in.ID)), nil
	case "userid":
		return integer(int64(in.UserID)), nil
	case "username":
		return str(in.username()), nil
	case "urgency":
		return integer(int64(in.Urgency)), nil
	case "priority":
		if in.Priority == nil {
			return str(""), nil
		}
		return integer(*in.Priority), nil
	case "state":
		return str(in.State), nil
	case "state_single":
		return str(stateAbbrev[in.State]), nil
	case "name":
		return str(in.Name), nil
	case "cwd":
		return str(in.Cwd), nil
	case "queue":
		return str(in.Queue), nil
	case "project":
		return str(in.Project), nil
	case "bank":
		return str(in.Bank), nil
	case "ntasks":
		return optInt(in.NTasks), nil
	case "ncores":
		return optInt(in.NCores), nil
	case "nnodes":
		return optInt(in.NNodes), nil
	case "duration":
		return in.duration(), nil
	case "expiration":
		return float(in.Expiration), nil
	case "t_remaining":
		if in.State != "RUN" {
			return float(0), nil
		}
		return float(math.Max(0, in.Expiration-float64(in.env.Now.UnixNano())/1e9)), nil
	case "ranks":
		return str(in.Ranks), nil
	case "nodelist":
		return str(in.Nodelist), nil
	case "success":
		if in.Success == nil {
			return str(""), nil
		}
		return boolean(*in.Success), nil
	case "result":
		return str(in.Result), nil
	case "result_abbrev":
		return str(resultAbbrev[in.Result]), nil
	case "t_submit":
		return float(in.TSubmit), nil
	case "t_depend":
		return float(in.TDepend), nil
	case "t_priority":
		return float(in.TPriority), nil
	case "t_sched":
		return float(in.TSched), nil
	case "t_run":
		return float(in.TRun), nil
	case "t_cleanup":
		return float(in.TCleanup), nil
	case "t_inactive":
		return float(in.TInactive), nil
	case "runtime":
		return float(in.runtime()), nil
	case "status":
		return str(in.status(false)), nil
	case "status_abbrev":
		return str(in.status(true)), nil
	case "waitstatus":
		return optInt(in.WaitStatus), nil
	case "returncode":
		return in.returncode(), nil
	case "exception.occurred":
		if in.active() {
			return str(""), nil
		}
		return boolean(in.Exception != nil), nil
	case "exception.severity":
		if in.Exception == nil || in.active() {
			return str(""), nil
		}
		return integer(int64(in.Exception.Severity)), nil
	case "exception.type":
		if in.Exception == nil || in.active() {
			return str(""), nil
		}
		return str(in.Exception.Type), nil
	case "exception.note":
		if in.Exception == nil || in.active() {
			return str(""), nil
		}
		return str(in.Exception.Note), nil
	case "annotations":
		if len(in.annotations()) == 0 {
			return str(""), nil
		}
		return str(pyJSON(in.ann)), nil
	case "dependencies":
		return str(in.dependencies()), nil
	case "contextual_info":
		return str(in.contextualInfo()), nil
	case "contextual_time":
		return in.contextualTime(), nil
	case "inactive_reason":
		return str(in.inactiveReason()), nil
	case "uri":
		return str(in.URI), nil
	case "purged":
		return pyTimeOrEmpty(in.Purged), nil
	case "cluster":
		return str(in.Cluster), nil
	}
	for _, p := range []string{"annotations.", "sched.", "user."} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			path := strings.Split(rest, ".")
			if p != "annotations." {
				path = append([]string{strings.TrimSuffix(p, ".")}, path...)
			}
			if v, ok := in.annotation(path); ok {
				return jsonValue(v), nil
			}
			return str(""), nil
		}
	}
	return value{}, fmt.Errorf("Unknown format field: %s", name)
}

func pyTimeOrEmpty(f float64) value {
	if f == 0 {
		return float(0)
	}
	return float(f)
}

func dothex(id uint64) string {
	return fmt.Sprintf("%04x.%04x.%04x.%04x", id>>48&0xffff, id>>32&0xffff, id>>16&0xffff, id&0xffff)
}
