package core

// AppendJSON appends the job object of the record's JSON form to b (the
// "job" of a record), as Record.AppendJSON writes it.
func (j *Job) AppendJSON(b []byte) []byte { return j.appendJSON(b) }

// AppendJSON appends the event as the record's JSON form writes it.
func (e *Event) AppendJSON(b []byte) []byte { return appendEvent(b, e) }
