package apache

import (
	"strings"
	"testing"
)

// A cluster id never starts with "-": kafka-storage format would take it
// for an option ("argument --cluster-id/-t: expected one argument").
func TestRandomIDNoLeadingDash(t *testing.T) {
	for range 5000 { // a leading "-" is 1 in 64 before the fix
		id := randomID()
		if strings.HasPrefix(id, "-") || len(id) != 22 {
			t.Fatalf("cluster id %q", id)
		}
	}
}
