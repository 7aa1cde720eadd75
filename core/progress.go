package core

// Progresser is a source that can say how far it is in catching up (a
// replay reading its files, a flux source reading the journal backlog).
// The CLI polls it for the progress bar and the periodic log line.
type Progresser interface {
	Progress() Progress
}

// Progress of one source's catch-up.
type Progress struct {
	// CatchingUp is true while a backlog or a replay is being read; once
	// false the source follows live events (or is done).
	CatchingUp bool
	// Events read so far in this catch-up (sent or already delivered).
	Events int64
	// Done of Total units ("bytes" of the input); Total 0 when unknown,
	// as for a Flux backlog, whose length the journal does not announce.
	Done, Total int64
	Unit        string
}
