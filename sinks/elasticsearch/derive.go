package elasticsearch

import (
	"math"
	"strconv"
	"strings"

	"github.com/fluxstream/fluxstream/core"
)

// Derived holds the numbers every profile computes from a job snapshot
// rather than copying: they are computed here and nowhere else, so the
// profiles cannot disagree. A nil field is not known (yet).
type Derived struct {
	// Elapsed is how long the job ran: t_cleanup - t_run, seconds (Flux's
	// own `runtime`; Slurm's elapsed = end - start).
	Elapsed *float64
	// QueueWait is t_run - t_sched, seconds: from the first time the job
	// was eligible (dependencies met, priority set: state SCHED) to its
	// allocation (Slurm's @queue_wait = start - eligible).
	QueueWait *float64
	// CoreHours is Elapsed x the allocated cores / 3600 (Slurm cpu_hours).
	CoreHours *float64
	// ExitCode and ExitSignal split the job shell's wait status (finish
	// event): a shell killed by signal N gives (128+N, N), as flux-core's
	// job-list reports returncode; a shell that exited with code C gives
	// (C, 0), except that C = 128+N with 0 < N < 64 gives (C, N), the job
	// shell's convention for a task killed by signal N (a timeout's SIGALRM
	// gives exit 142, signal 14). Unknown until the finish event.
	ExitCode, ExitSignal *int
	// TimeLimit is the requested duration in seconds; nil when unlimited.
	TimeLimit *float64
	// Hosts is the allocated nodelist expanded to host names (nil before
	// RUN, or when it would exceed maxHosts names).
	Hosts []string
}

// maxHosts bounds the expanded node list kept in a document.
const maxHosts = 4096

// Derive computes the derived numbers of a job snapshot.
func Derive(j *core.Job) Derived {
	var d Derived
	if j == nil {
		return d
	}
	if j.TRun > 0 && j.TCleanup > 0 && j.TCleanup >= j.TRun {
		e := j.TCleanup - j.TRun
		d.Elapsed = &e
		if c := allocatedCores(j); c > 0 {
			ch := e * float64(c) / 3600
			d.CoreHours = &ch
		}
	}
	if j.TRun > 0 && j.TSched > 0 && j.TRun >= j.TSched {
		w := j.TRun - j.TSched
		d.QueueWait = &w
	}
	if j.WaitStatus != nil {
		code, sig := SplitWaitStatus(*j.WaitStatus)
		d.ExitCode, d.ExitSignal = &code, &sig
	}
	if j.Duration != nil && *j.Duration > 0 {
		tl := *j.Duration
		d.TimeLimit = &tl
	}
	nodelist := j.Nodelist
	if nodelist == "" && j.Allocated != nil {
		nodelist = j.Allocated.Nodelist
	}
	if nodelist != "" {
		d.Hosts = ExpandHostlist(nodelist, maxHosts)
	}
	return d
}

// allocatedCores is the cores of R once allocated, else 0.
func allocatedCores(j *core.Job) int {
	if j.Allocated != nil {
		return j.Allocated.NCores
	}
	return 0
}

// SplitWaitStatus splits a wait(2) status into an exit code and a signal
// (see Derived.ExitCode).
func SplitWaitStatus(ws int) (code, signal int) {
	if sig := ws & 0x7f; sig != 0 && sig != 0x7f { // WIFSIGNALED
		return 128 + sig, sig
	}
	code = (ws >> 8) & 0xff // WEXITSTATUS
	if code > 128 && code < 128+64 {
		return code, code - 128
	}
	return code, 0
}

// SlurmExitCode is Slurm's "code:signal" form: "0:N" for a signal, else
// "C:0".
func SlurmExitCode(code, signal int) string {
	if signal > 0 {
		return "0:" + strconv.Itoa(signal)
	}
	return strconv.Itoa(code) + ":0"
}

// SlurmState maps a Flux snapshot to Slurm's job state names: PENDING
// (NEW, DEPEND, PRIORITY, SCHED), RUNNING (RUN), COMPLETING (CLEANUP),
// then the result: COMPLETED, FAILED, CANCELLED (Slurm's spelling),
// TIMEOUT.
func SlurmState(j *core.Job) string {
	switch j.State {
	case "NEW", "DEPEND", "PRIORITY", "SCHED":
		return "PENDING"
	case "RUN":
		return "RUNNING"
	case "CLEANUP":
		return "COMPLETING"
	case "INACTIVE":
		if j.Result == "CANCELED" {
			return "CANCELLED"
		}
		return j.Result
	}
	return j.State
}

// FSD formats seconds in Flux Standard Duration (RFC 23): the largest
// unit that divides it (d, h, m), else seconds.
func FSD(sec float64) string {
	if sec == math.Trunc(sec) {
		s := int64(sec)
		switch {
		case s > 0 && s%86400 == 0:
			return strconv.FormatInt(s/86400, 10) + "d"
		case s > 0 && s%3600 == 0:
			return strconv.FormatInt(s/3600, 10) + "h"
		case s > 0 && s%60 == 0:
			return strconv.FormatInt(s/60, 10) + "m"
		}
	}
	return strconv.FormatFloat(sec, 'f', -1, 64) + "s"
}

// ExpandHostlist expands an RFC 29 hostlist ("node[0-3,7],login1") to
// host names, in order. It returns nil if the list is malformed or has
// more than max names.
func ExpandHostlist(hl string, max int) []string {
	var out []string
	for len(hl) > 0 {
		// One term: prefix, optional [ranges], optional suffix, up to a
		// comma outside brackets.
		end, depth := len(hl), 0
		for i := 0; i < len(hl); i++ {
			switch hl[i] {
			case '[':
				depth++
			case ']':
				depth--
			case ',':
				if depth == 0 {
					end = i
				}
			}
			if end != len(hl) {
				break
			}
		}
		term := hl[:end]
		if end < len(hl) {
			hl = hl[end+1:]
		} else {
			hl = ""
		}
		if term == "" {
			continue
		}
		lb := strings.IndexByte(term, '[')
		if lb < 0 {
			out = append(out, term)
		} else {
			rb := strings.IndexByte(term, ']')
			if rb < lb {
				return nil
			}
			prefix, suffix := term[:lb], term[rb+1:]
			for _, r := range strings.Split(term[lb+1:rb], ",") {
				lo, hi, isRange := strings.Cut(r, "-")
				if !isRange {
					hi = lo
				}
				a, err1 := strconv.Atoi(lo)
				b, err2 := strconv.Atoi(hi)
				if err1 != nil || err2 != nil || b < a || b-a > max {
					return nil
				}
				width := 0
				if len(lo) > 1 && lo[0] == '0' {
					width = len(lo)
				}
				for n := a; n <= b; n++ {
					s := strconv.Itoa(n)
					for len(s) < width {
						s = "0" + s
					}
					out = append(out, prefix+s+suffix)
					if len(out) > max {
						return nil
					}
				}
			}
		}
		if len(out) > max {
			return nil
		}
	}
	return out
}

// Version is the external version of a job document written for an event
// at ts (unix seconds): the time in nanoseconds. It grows with the job's
// events (the job-manager is single-threaded and stamps them in order),
// and distinct float timestamps (2^-22 s apart near 2026) never share a
// nanosecond. It fits a long until 2262.
func Version(ts float64) int64 {
	return int64(math.Round(ts * 1e9))
}

// JobKey is the _id of a job's document in the jobs index: cluster, f58 job
// id and submit time, so a job id reused by a restarted instance (issue 16)
// gets a document of its own. "-" stands for an unknown submit time.
func JobKey(cluster, jobid string, tsubmit float64) string {
	b := make([]byte, 0, len(cluster)+len(jobid)+24)
	if cluster == "" {
		cluster = "-"
	}
	b = append(b, cluster...)
	b = append(b, '.')
	b = append(b, jobid...)
	b = append(b, '.')
	if tsubmit > 0 {
		b = strconv.AppendFloat(b, tsubmit, 'f', -1, 64)
	} else {
		b = append(b, '-')
	}
	return string(b)
}
