package flux

import "github.com/fluxstream/fluxstream/sources/flux/journal"

// Annotator is the interface the source wants from the journal consumer
// to take job-list's annotations.
type Annotator = annotator

// SetAnnotator makes sources provisioned from now on use f to find their
// annotator; restore undoes it.
func SetAnnotator(f func(*journal.Consumer) Annotator) (restore func()) {
	old := newAnnotator
	newAnnotator = f
	return func() { newAnnotator = old }
}

// ParseJobList exposes the job-list.list response decoder.
func ParseJobList(payload []byte) (ids []uint64, annotations []string, err error) {
	jobs, err := parseJobList(payload)
	for _, j := range jobs {
		ids = append(ids, j.id)
		annotations = append(annotations, string(j.annotations))
	}
	return ids, annotations, err
}
