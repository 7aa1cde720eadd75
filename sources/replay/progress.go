package replay

import (
	"io"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"

	"github.com/fluxstream/fluxstream/core"
)

var _ core.Progresser = (*Source)(nil)

// progress is what the CLI's progress bar polls while the source runs.
type progress struct {
	running atomic.Bool
	total   atomic.Int64 // bytes of every input file
	doneB   atomic.Int64 // bytes of the files finished
	read    atomic.Int64 // bytes read of the current file
	records atomic.Int64
}

func (p *progress) start(paths []string) {
	var total int64
	for _, path := range paths {
		total += inputSize(path)
	}
	p.total.Store(total)
	p.running.Store(true)
}

func (p *progress) fileDone(string) {
	p.doneB.Add(p.read.Swap(0))
}

func (p *progress) finish() { p.running.Store(false) }

// inputSize is the size of a journal file on disk (0 when unknown).
func inputSize(path string) int64 {
	var fi fs.FileInfo
	var err error
	if name, ok := strings.CutPrefix(path, "embedded:"); ok {
		fi, err = fs.Stat(embedded, "embedded/"+name+".jsonl")
	} else {
		fi, err = os.Stat(path)
	}
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Progress reports the bytes read of all the input files.
func (s *Source) Progress() core.Progress {
	return core.Progress{CatchingUp: s.prog.running.Load(), Events: s.prog.records.Load(),
		Done: s.prog.doneB.Load() + s.prog.read.Load(), Total: s.prog.total.Load(), Unit: "bytes"}
}

// countingReader adds what it reads to n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}
