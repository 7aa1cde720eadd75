package main

import (
	"fmt"
	"strings"
)

var header = []string{"workload", "run", "events/s", "CPU s", "events/CPU-s", "peak RSS", "output verified", "target", "result"}

// cells are the figures of one run row.
type cells struct {
	rate, cpu, perCPU, rss, verified string
	err                              string
}

type table struct {
	rows  [][]string
	notes []string
}

func (t *table) add(workload, run string, c cells) {
	if c.err != "" {
		msg := oneLine(c.err)
		if !strings.HasPrefix(msg, "skipped") {
			msg = "error: " + msg
		}
		t.rows = append(t.rows, []string{workload, run, "", "", "", "", msg, "", ""})
		return
	}
	t.rows = append(t.rows, []string{workload, run, c.rate, c.cpu, c.perCPU, c.rss, c.verified, "", ""})
}

// addCheck puts a target on the last row if it has none, else on a row
// of its own.
func (t *table) addCheck(c check) {
	res := "FAIL"
	switch {
	case c.absent:
		res = "n/a"
	case c.ok:
		res = "PASS"
	}
	last := t.rows[len(t.rows)-1]
	if last[7] == "" {
		last[7], last[8] = c.what, res
		return
	}
	row := make([]string, len(header))
	row[7], row[8] = c.what, res
	t.rows = append(t.rows, row)
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

func (t *table) text() string {
	w := make([]int, len(header))
	for _, r := range append([][]string{header}, t.rows...) {
		for i, c := range r {
			w[i] = max(w[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	line := func(r []string) {
		for i, c := range r {
			pad := w[i] - len([]rune(c))
			if i >= 2 && i <= 5 { // figures right-aligned
				fmt.Fprintf(&b, "%s%s", strings.Repeat(" ", pad), c)
			} else {
				fmt.Fprintf(&b, "%s%s", c, strings.Repeat(" ", pad))
			}
			if i < len(r)-1 {
				b.WriteString("  ")
			}
		}
		b.WriteString("\n")
	}
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = strings.Repeat("-", w[i])
	}
	line(sep)
	for _, r := range t.rows {
		line(r)
	}
	return b.String()
}

func (t *table) markdown() string {
	var b strings.Builder
	row := func(r []string) {
		b.WriteString("|")
		for _, c := range r {
			b.WriteString(" " + strings.ReplaceAll(c, "|", `\|`) + " |")
		}
		b.WriteString("\n")
	}
	row(header)
	b.WriteString("|---|---|--:|--:|--:|--:|---|---|---|\n")
	for _, r := range t.rows {
		row(r)
	}
	return b.String()
}
