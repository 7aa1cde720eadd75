// Package jobsfmt prints archived jobs the way `flux jobs` (flux-core
// 0.88) prints them: its format strings (Python str.format with flux's
// extensions), its named formats, headings, the ?: +: ?+: sentinels, the
// !d !D !F !H !P conversions, the h and + spec suffixes, and the
// `flux jobs --json` objects.
package jobsfmt

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Formats are the named formats of flux jobs -o.
var Formats = map[string]string{
	"default": "{id.f58:>12} ?:{queue:<8.8} +:{username:<8} {name:<10.10+} " +
		"{status_abbrev:>2.2} {ntasks:>6} {nnodes:>6h} " +
		"{contextual_time!F:>8h} {contextual_info}",
	"long": "{id.f58:>12} ?:{queue:<8.8} +:{username:<8} {name:<10.10+} " +
		"{status:>9.9} {ntasks:>6} {nnodes:>6h} " +
		"{t_submit!d:%b%d %R::>12} {t_remaining!F:>12h} " +
		"{contextual_time!F:>8h} {contextual_info}",
	"deps": "{id.f58:>12} ?:{queue:<8.8} {name:<10.10+} {urgency:<3} " +
		"{priority:<12} {state:<8.8} {dependencies}",
	"endreason": "{id.f58:>12} ?:{queue:<8.8} +:{username:<8} {name:<10.10+} " +
		"{status_abbrev:>2.2} {t_inactive!d:%b%d %R::>12h} {inactive_reason}",
}

// FormatNames lists the named formats in order.
var FormatNames = []string{"default", "long", "deps", "endreason"}

// Headings are the column headings of the supported fields (flux's
// JobInfoFormat.headings, less the instance.* fields that need a live
// instance, plus the archive's own purged and cluster).
var Headings = map[string]string{
	"id": "JOBID", "id.dec": "JOBID", "id.hex": "JOBID", "id.f58": "JOBID", "id.f58plain": "JOBID",
	"id.kvs": "JOBID", "id.dothex": "JOBID",
	"userid": "UID", "username": "USER", "urgency": "URG", "priority": "PRI",
	"state": "STATE", "state_single": "S", "name": "NAME", "cwd": "CWD", "queue": "QUEUE",
	"project": "PROJECT", "bank": "BANK", "ntasks": "NTASKS", "ncores": "NCORES", "duration": "DURATION",
	"nnodes": "NNODES", "expiration": "EXPIRATION", "t_remaining": "T_REMAINING", "ranks": "RANKS",
	"nodelist": "NODELIST", "success": "SUCCESS", "result": "RESULT", "result_abbrev": "RS",
	"t_submit": "T_SUBMIT", "t_depend": "T_DEPEND", "t_priority": "T_PRIORITY", "t_sched": "T_SCHED",
	"t_run": "T_RUN", "t_cleanup": "T_CLEANUP", "t_inactive": "T_INACTIVE", "runtime": "RUNTIME",
	"status": "STATUS", "status_abbrev": "ST", "waitstatus": "WSTATUS", "returncode": "RC",
	"exception.occurred": "EXCEPTION-OCCURRED", "exception.severity": "EXCEPTION-SEVERITY",
	"exception.type": "EXCEPTION-TYPE", "exception.note": "EXCEPTION-NOTE",
	"annotations": "ANNOTATIONS", "dependencies": "DEPENDENCIES", "contextual_info": "INFO",
	"contextual_time": "TIME", "inactive_reason": "INACTIVE-REASON",
	"annotations.sched.t_estimate": "T_ESTIMATE", "annotations.sched.reason_pending": "REASON",
	"annotations.sched.resource_summary": "RESOURCES", "sched": "SCHED", "sched.t_estimate": "T_ESTIMATE",
	"sched.reason_pending": "REASON", "sched.resource_summary": "RESOURCES", "user": "USER", "uri": "URI",
	"purged": "PURGED", "cluster": "CLUSTER",
}

// Format is a parsed output format.
type Format struct {
	pieces   []piece
	headings map[string]string
}

// Parse reads a format string, or the name of a named format.
func Parse(f string) (*Format, error) {
	if named, ok := Formats[f]; ok {
		f = named
	}
	ps, err := parseFormat(f)
	if err != nil {
		return nil, fmt.Errorf("Error in user format: %v", err)
	}
	h := map[string]string{}
	for _, p := range ps {
		if p.field == "" {
			continue
		}
		if hd, ok := Headings[p.field]; ok {
			h[p.field] = hd
			continue
		}
		switch {
		case strings.HasPrefix(p.field, "annotations."):
			h[p.field] = strings.ToUpper(strings.TrimPrefix(p.field, "annotations."))
		case strings.HasPrefix(p.field, "sched."), strings.HasPrefix(p.field, "user."):
			h[p.field] = strings.ToUpper(p.field)
		default:
			return nil, fmt.Errorf("Error in user format: Unknown format field: %s", p.field)
		}
		if p.conv != "" && !strings.Contains("dDFHPsr", p.conv) {
			return nil, fmt.Errorf("Error in user format: unknown conversion specifier %s", p.conv)
		}
	}
	return &Format{pieces: ps, headings: h}, nil
}

var emptyOutputs = map[string]bool{"": true, "0s": true, "0.0": true, "0:00:00": true, "1970-01-01T00:00:00": true}

func isEmpty(s string, loc *time.Location) bool {
	if loc == nil {
		loc = time.Local
	}
	return emptyOutputs[s] || s == time.Unix(0, 0).In(loc).Format("2006-01-02T15:04:05")
}

var sentinels = []string{"?+:", "?:", "+:"} // longest first

// Filter applies the ?: (drop a column empty for every job), +: (widen a
// column to its widest value) and ?+: sentinels over the jobs to print,
// as flux's OutputFormat.filter does, and returns the format to print.
func (f *Format) Filter(jobs []*Info, noHeader bool) (*Format, error) {
	type entry struct {
		index    int
		typ      string
		maxwidth int
		width    int
		spec     spec
	}
	var lst []*entry
	for i, p := range f.pieces {
		if p.field == "" {
			continue
		}
		end := ""
		for _, s := range sentinels {
			if strings.HasSuffix(p.text, s) {
				end = s
				break
			}
		}
		if end == "" {
			continue
		}
		sp := specAfterTime(p.spec)
		w, _ := strconv.Atoi(sp.width)
		typ := map[string]string{"?:": "filter", "+:": "maxwidth", "?+:": "both"}[end]
		if typ != "filter" && !noHeader {
			w = max(w, utf8.RuneCountInString(f.headings[p.field]))
		}
		lst = append(lst, &entry{index: i, typ: typ, maxwidth: w, spec: sp})
	}
	if len(lst) == 0 {
		return f, nil
	}
	for _, j := range jobs {
		for _, e := range lst {
			p := f.pieces[e.index]
			s, err := j.render(p.field, p.conv, "")
			if err != nil {
				return nil, err
			}
			w := utf8.RuneCountInString(s)
			if isEmpty(s, j.env.Location) {
				w = 0
			}
			e.maxwidth = max(e.maxwidth, w)
			e.width = max(e.width, w)
		}
	}
	remove := map[int]bool{}
	out := &Format{headings: f.headings, pieces: append([]piece(nil), f.pieces...)}
	for _, e := range lst {
		if e.width == 0 && e.typ != "maxwidth" {
			remove[e.index] = true
			continue
		}
		if e.typ != "filter" {
			e.spec.width = strconv.Itoa(e.maxwidth)
			if (e.spec.typ == "" || e.spec.typ == "s") && e.spec.precision != "" {
				if p, _ := strconv.Atoi(e.spec.precision); p < e.maxwidth {
					e.spec.precision = e.spec.width
				}
			}
			out.pieces[e.index].spec = e.spec.String()
		}
	}
	kept := out.pieces[:0]
	for i, p := range out.pieces {
		if remove[i] {
			continue
		}
		for _, s := range sentinels {
			p.text = strings.ReplaceAll(p.text, s, "")
		}
		kept = append(kept, p)
	}
	out.pieces = kept
	return out, nil
}

// specAfterTime is the part of a spec flux's FormatSpec reads: after a
// datetime's "::" if there is one.
func specAfterTime(s string) spec {
	if i := strings.Index(s, "::"); i >= 0 {
		s = s[i+2:]
	}
	return parseSpec(s)
}

// Header is the heading line: each heading aligned to its field's width.
func (f *Format) Header() string {
	var b strings.Builder
	for _, p := range f.pieces {
		b.WriteString(p.text)
		if p.field == "" {
			continue
		}
		sp := specAfterTime(p.spec)
		w, _ := strconv.Atoi(sp.width)
		b.WriteString(pad(f.headings[p.field], w, "", sp.align, "<"))
	}
	return b.String()
}

// Line formats one job.
func (f *Format) Line(j *Info) (string, error) {
	var b strings.Builder
	for _, p := range f.pieces {
		b.WriteString(p.text)
		if p.field == "" {
			continue
		}
		s, err := j.render(p.field, p.conv, p.spec)
		if err != nil {
			return "", err
		}
		b.WriteString(s)
	}
	return b.String(), nil
}

// Print writes the header (unless noHeader) and a line per job, after
// the sentinels are applied, as flux jobs does.
func (f *Format) Print(jobs []*Info, noHeader bool, w func(string)) error {
	ff, err := f.Filter(jobs, noHeader)
	if err != nil {
		return err
	}
	if !noHeader {
		w(ff.Header())
	}
	for _, j := range jobs {
		l, err := ff.Line(j)
		if err != nil {
			return err
		}
		if strings.TrimSpace(l) == "" {
			continue
		}
		w(l)
	}
	return nil
}

// render is UtilFormatter: convert_field, then format_field.
func (j *Info) render(field, conv, specStr string) (string, error) {
	v, err := j.field(field)
	if err != nil {
		return "", err
	}
	out, err := j.formatValue(v, conv, specStr)
	if err != nil {
		return "", fmt.Errorf("field %s: %w", field, err)
	}
	return out, nil
}

// formatValue is convert_field then format_field of one value.
func (j *Info) formatValue(v value, conv, specStr string) (string, error) {
	var err error
	if v, err = j.convert(v, conv); err != nil {
		return "", err
	}
	trunc := false
	if strings.HasSuffix(specStr, "+") {
		trunc, specStr = true, specStr[:len(specStr)-1]
	}
	orig := v.String()
	var out string
	if v.k == kTime {
		out, err = j.formatTime(v.f, specStr)
	} else {
		if strings.HasSuffix(specStr, "h") {
			s := v.String()
			if isEmpty(s, j.env.Location) {
				s = "-"
			}
			v, specStr = str(s), specStr[:len(specStr)-1]+"s"
		}
		out, err = pyFormat(v, specStr)
	}
	if err != nil {
		return "", err
	}
	if trunc && utf8.RuneCountInString(out) < utf8.RuneCountInString(orig) {
		r := []rune(out)
		if len(r) > 0 {
			out = string(r[:len(r)-1]) + "+"
		}
	}
	return out, nil
}

func numeric(v value) (float64, bool) {
	switch v.k {
	case kInt:
		return float64(v.i), true
	case kFloat, kTime:
		return v.f, true
	case kBool:
		if v.b {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func (j *Info) convert(v value, conv string) (value, error) {
	switch conv {
	case "":
		return v, nil
	case "s":
		return str(v.String()), nil
	case "r":
		if v.k == kStr {
			return str("'" + v.s + "'"), nil
		}
		return str(v.String()), nil
	case "d":
		if f, ok := numeric(v); ok {
			return timeValue(f), nil
		}
		if v.String() == "" {
			return timeValue(0), nil
		}
	case "D":
		f, ok := numeric(v)
		if !ok || f == 0 {
			if v.String() == "" || ok {
				return str(""), nil
			}
			break
		}
		return str(unixTime(f).In(j.env.Location).Format("2006-01-02T15:04:05")), nil
	case "F":
		if f, ok := numeric(v); ok {
			return str(fsd(f)), nil
		}
		if v.String() == "" {
			return str(""), nil
		}
	case "H":
		if f, ok := numeric(v); ok {
			if f > 0 && f < 1 {
				f = 1
			}
			return str(timedelta(math.RoundToEven(f))), nil
		}
		if v.String() == "" {
			return str(""), nil
		}
	case "P":
		if f, ok := numeric(v); ok {
			f *= 100
			if f > 0 && f < 1 {
				return str(fmt.Sprintf("%.2f%%", f)), nil
			}
			return str(pyExp(fmt.Sprintf("%.3g", f)) + "%"), nil
		}
		if v.String() == "" {
			return str(""), nil
		}
	default:
		return v, fmt.Errorf("unknown conversion specifier %s", conv)
	}
	return v, fmt.Errorf("conversion !%s of %q", conv, v.String())
}

// formatTime is flux's UtilDatetime.__format__: strftime before "::",
// a Python spec after it; the epoch prints empty ("-" with h).
func (j *Info) formatTime(f float64, specStr string) (string, error) {
	timefmt, sp, _ := strings.Cut(specStr, "::")
	result := ""
	if f != 0 {
		if timefmt == "" {
			timefmt = "%FT%T"
		}
		result = strftime(unixTime(f).In(j.env.Location), timefmt)
	}
	if strings.HasSuffix(sp, "h") {
		if result == "" {
			result = "-"
		}
		sp = sp[:len(sp)-1] + "s"
	}
	return pyFormat(str(result), sp)
}

// fsd is Flux Standard Duration (RFC 23), as flux.util.fsd prints it.
func fsd(secs float64) string {
	switch {
	case math.IsInf(secs, 0):
		return "inf"
	case secs < 1e-3:
		return "0s"
	case secs < 10:
		return fmt.Sprintf("%.3fs", secs)
	case secs < 60:
		return pyExp(fmt.Sprintf("%.4g", secs)) + "s"
	case secs < 3600:
		return pyExp(fmt.Sprintf("%.4g", secs/60)) + "m"
	case secs < 86400:
		return pyExp(fmt.Sprintf("%.4g", secs/3600)) + "h"
	}
	return pyExp(fmt.Sprintf("%.4g", secs/86400)) + "d"
}

// timedelta is Python's str(timedelta(seconds=n)).
func timedelta(n float64) string {
	neg := n < 0
	s := int64(math.Abs(n))
	days, rem := s/86400, s%86400
	out := fmt.Sprintf("%d:%02d:%02d", rem/3600, rem/60%60, rem%60)
	if neg {
		// Python normalizes to -1 day, +HH:MM:SS; rare enough to say it plainly.
		return "-" + out
	}
	switch days {
	case 0:
		return out
	case 1:
		return "1 day, " + out
	}
	return fmt.Sprintf("%d days, %s", days, out)
}

// strftime supports the conversions flux formats use and the common
// others.
func strftime(t time.Time, f string) string {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' || i+1 == len(f) {
			b.WriteByte(f[i])
			continue
		}
		i++
		switch f[i] {
		case 'a':
			b.WriteString(t.Format("Mon"))
		case 'A':
			b.WriteString(t.Format("Monday"))
		case 'b', 'h':
			b.WriteString(t.Format("Jan"))
		case 'B':
			b.WriteString(t.Format("January"))
		case 'd':
			b.WriteString(t.Format("02"))
		case 'e':
			b.WriteString(fmt.Sprintf("%2d", t.Day()))
		case 'H':
			b.WriteString(t.Format("15"))
		case 'I':
			b.WriteString(t.Format("03"))
		case 'j':
			b.WriteString(fmt.Sprintf("%03d", t.YearDay()))
		case 'm':
			b.WriteString(t.Format("01"))
		case 'M':
			b.WriteString(t.Format("04"))
		case 'p':
			b.WriteString(t.Format("PM"))
		case 'S':
			b.WriteString(t.Format("05"))
		case 'f':
			b.WriteString(fmt.Sprintf("%06d", t.Nanosecond()/1000))
		case 'y':
			b.WriteString(t.Format("06"))
		case 'Y':
			b.WriteString(t.Format("2006"))
		case 'Z':
			b.WriteString(t.Format("MST"))
		case 'z':
			b.WriteString(t.Format("-0700"))
		case 'F':
			b.WriteString(t.Format("2006-01-02"))
		case 'T':
			b.WriteString(t.Format("15:04:05"))
		case 'R':
			b.WriteString(t.Format("15:04"))
		case 'D':
			b.WriteString(t.Format("01/02/06"))
		case 's':
			b.WriteString(strconv.FormatInt(t.Unix(), 10))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(f[i])
		}
	}
	return b.String()
}

// FieldNames lists the supported fields, sorted.
func FieldNames() []string {
	out := make([]string, 0, len(Headings))
	for k := range Headings {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
