package main

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestReadStatusOfThisProcess(t *testing.T) {
	s, ok := readStatus(os.Getpid())
	if !ok || s.RSS <= 0 || s.Anon <= 0 || s.Anon > s.RSS {
		t.Fatalf("readStatus = %+v, %v", s, ok)
	}
	if _, ok := readStatus(-1); ok {
		t.Fatal("a process that does not exist has a status")
	}
}

func TestRunReportsRusageAndFailures(t *testing.T) {
	dir := t.TempDir()
	p, err := run(context.Background(), dir, "ok", []string{"sh", "-c", "echo out; echo err >&2"}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if p.MaxRSS <= 0 || p.Wall <= 0 {
		t.Fatalf("rusage not read: %+v", p)
	}
	if b, _ := os.ReadFile(dir + "/ok.stdout"); string(b) != "out\n" {
		t.Fatalf("stdout %q", b)
	}
	_, err = run(context.Background(), dir, "bad", []string{"sh", "-c", "echo why >&2; exit 3"}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "why") {
		t.Fatalf("err = %v", err)
	}
}

func samples(mb ...int64) []rssSample {
	var ss []rssSample
	for _, m := range mb {
		ss = append(ss, rssSample{RSS: m * 1e6, Anon: m * 1e6 / 2})
	}
	return ss
}

func TestFlatCheck(t *testing.T) {
	flat := &summary{name: "v", runs: 1, samples: [][]rssSample{samples(40, 60, 62, 61, 63, 62, 64, 63)}}
	if c := flatCheck(flat); !c.ok || c.on != "v" {
		t.Fatalf("flat run judged %+v", c)
	}
	growing := &summary{name: "v", runs: 1, samples: [][]rssSample{samples(40, 60, 80, 100, 120, 140, 160, 180)}}
	if c := flatCheck(growing); c.ok {
		t.Fatalf("growing run judged flat: %+v", c)
	}
	if c := flatCheck(&summary{}); !c.absent {
		t.Fatalf("no samples: %+v", c)
	}
	note := rssNote("w", samples(1, 2, 3, 4, 5, 6, 7, 8, 9, 10))
	if !strings.Contains(note, "MB: 1 2 3 4 5 6 7 8 9 10;") {
		t.Fatal(note)
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Fatal(m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Fatal(m)
	}
}
