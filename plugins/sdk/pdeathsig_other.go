//go:build unix && !linux

package sdk

// setPdeathsig has no equivalent here: the parent poll does the work.
func setPdeathsig() {}
