package flux

import "github.com/fluxstream/fluxstream/core"

var _ core.Progresser = (*Source)(nil)

// Progress reports the journal backlog being read: events so far (sent
// and already delivered). Flux does not announce a backlog's length, so
// there is no total: the CLI shows a spinner with the rate.
func (s *Source) Progress() core.Progress {
	st := s.Stats()
	return core.Progress{CatchingUp: st.InBacklog && s.Status().Connected,
		Events: int64(st.Backlog.Events + st.Backlog.Skipped), Unit: "events"}
}
