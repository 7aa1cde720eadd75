package jobstate

import "github.com/fluxstream/fluxstream/core"

// refresh brings the snapshot up to date with the internal state, with
// job-list's rules for when a field is shown (store_attr in job_util.c)
// and the computed fields of Python's JobInfo (info.py). Pointers are
// replaced, never written through, so earlier snapshots stay intact.
func (s *State) refresh() {
	j := &s.job
	j.UserID = s.userID
	j.Urgency = s.urgency
	j.State = stateName(s.state)
	if s.statesMask&stSched != 0 {
		setInt64(&j.Priority, s.priority)
	} else {
		j.Priority = nil
	}

	j.Name, j.Cwd, j.Queue, j.Project, j.Bank = s.name, s.cwd, s.queue, s.project, s.bank
	setOptInt(&j.NTasks, s.ntasks)
	setOptInt(&j.NCores, s.ncores)
	setOptInt(&j.NNodes, s.nnodes)
	if s.duration < 0 {
		j.Duration = nil
	} else if j.Duration == nil || *j.Duration != s.duration {
		d := new(float64)
		*d = s.duration
		j.Duration = d
	}
	j.Requested = s.requested

	// ranks, nodelist and expiration show from RUN on.
	if s.statesMask&stRun != 0 {
		j.Ranks, j.Nodelist = s.ranks, s.nodelist
		j.Expiration = max(s.expiration, 0)
		if s.rParsed {
			j.Allocated = s.allocated
		} else {
			j.Allocated = nil
		}
	} else {
		j.Ranks, j.Nodelist, j.Expiration, j.Allocated = "", "", 0, nil
	}

	if s.waitStatus >= 0 {
		setInt(&j.WaitStatus, s.waitStatus)
	} else {
		j.WaitStatus = nil
	}
	// Deliberate difference: job-list shows the exception only once the
	// job is inactive; a stream should show it when it happens.
	if s.excOccurred {
		if e := j.Exception; e == nil || e.Severity != s.excSeverity || e.Type != s.excType || e.Note != s.excNote {
			j.Exception = &core.Exception{Occurred: true, Severity: s.excSeverity, Type: s.excType, Note: s.excNote}
		}
	} else {
		j.Exception = nil
	}

	inactive := s.statesMask&stInactive != 0
	if inactive {
		j.Result = s.result
		if j.Success == nil || *j.Success != s.success {
			v := new(bool)
			*v = s.success
			j.Success = v
		}
	} else {
		j.Result, j.Success = "", nil
	}
	switch {
	case s.state&(stDepend|stPriority|stSched|stRun|stCleanup) != 0:
		j.Status = j.State
	default: // NEW has no status; INACTIVE shows the result
		j.Status = j.Result
	}
	if rc, ok := returnCode(s.waitStatus, j.Result); ok {
		setInt(&j.ReturnCode, rc)
	} else {
		j.ReturnCode = nil
	}

	// t_depend is t_submit for eventlogs older than version 1.
	switch {
	case s.submitVersion < 1:
		j.TDepend = j.TSubmit
	case s.statesMask&stDepend != 0:
		j.TDepend = s.tDepend
	default:
		j.TDepend = 0
	}
	j.TRun = ifMask(s.statesMask, stRun, s.tRun)
	j.TCleanup = ifMask(s.statesMask, stCleanup, s.tCleanup)
	j.TInactive = ifMask(s.statesMask, stInactive, s.tInactive)
	j.Runtime = 0
	if j.TCleanup > 0 && j.TRun > 0 {
		j.Runtime = j.TCleanup - j.TRun
	}
}

func ifMask(mask, bit uint8, v float64) float64 {
	if mask&bit != 0 {
		return v
	}
	return 0
}

// returnCode is JobInfo.returncode: the exit code, or -signal, from the
// wait status; without one, -128 for a canceled job and 1 for a failed
// one; nothing otherwise (active, timeout before running, stopped).
func returnCode(waitStatus int, result string) (int, bool) {
	if waitStatus < 0 {
		switch result {
		case ResultCanceled:
			return -128, true
		case ResultFailed:
			return 1, true
		}
		return 0, false
	}
	switch sig := waitStatus & 0x7f; {
	case sig == 0: // WIFEXITED
		return (waitStatus >> 8) & 0xff, true
	case sig != 0x7f: // WIFSIGNALED
		return -sig, true
	}
	return 0, false // stopped or continued: not an exit
}

// setOptInt sets *p to v, or nil for the "unknown" values below 0.
func setOptInt(p **int, v int) {
	if v < 0 {
		*p = nil
		return
	}
	setInt(p, v)
}

// setInt points *p at v. It allocates only when the value changes (and
// inside the branch: taking &v would move every call's v to the heap).
func setInt(p **int, v int) {
	if *p == nil || **p != v {
		n := new(int)
		*n = v
		*p = n
	}
}

func setInt64(p **int64, v int64) {
	if *p == nil || **p != v {
		n := new(int64)
		*n = v
		*p = n
	}
}

// f58Digits is the base58 alphabet of RFC 19 (Bitcoin's).
const f58Digits = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// F58 encodes a job id in RFC 19 F58 form with the ASCII prefix "f", as
// flux prints it under a non-UTF-8 locale or with FLUX_F58_FORCE_ASCII
// (Flux prints "ƒ" under a UTF-8 locale; both forms decode to the id).
func F58(id uint64) string {
	var buf [12]byte // "f" + at most 11 base58 digits for 64 bits
	i := len(buf)
	for {
		i--
		buf[i] = f58Digits[id%58]
		id /= 58
		if id == 0 {
			break
		}
	}
	i--
	buf[i] = 'f'
	return string(buf[i:])
}
