package core

import (
	"errors"
	"fmt"
	"sort"
)

// BatchError is what a Sink.Write returns when only some records of a batch
// failed. Only those are retried (or dead-lettered, for permanent errors).
type BatchError struct {
	Failed map[int]error // index in the batch -> why
}

func (e *BatchError) Error() string {
	idx := make([]int, 0, len(e.Failed))
	for i := range e.Failed {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	if len(idx) == 0 {
		return "batch partly failed"
	}
	return fmt.Sprintf("%d record(s) of the batch failed, first (index %d): %v", len(idx), idx[0], e.Failed[idx[0]])
}

// Fail records a per-record failure, creating the map on first use.
func (e *BatchError) Fail(i int, err error) {
	if e.Failed == nil {
		e.Failed = map[int]error{}
	}
	e.Failed[i] = err
}

// ErrOrNil returns e if any record failed, else nil.
func (e *BatchError) ErrOrNil() error {
	if e == nil || len(e.Failed) == 0 {
		return nil
	}
	return e
}

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks an error that retrying cannot fix (the destination
// rejects the record itself). The runtime moves such records to the sink's
// dead-letter file with the reason instead of retrying forever.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}
