package jobstate

import "fmt"

// MaxExpandHosts bounds ExpandHostlist: a damaged nodelist must not make
// a caller allocate without limit.
const MaxExpandHosts = 1 << 20

// ExpandHostlist returns the hosts of an RFC 29 hostlist in order, as
// libhostlist decodes it: "node[1-3,7],login0" gives node1 node2 node3
// node7 login0; a range keeps the width of its low end ("n[08-10]" gives
// n08 n09 n10).
func ExpandHostlist(s string) ([]string, error) {
	hl, err := decodeHostlist(s)
	if err != nil {
		return nil, fmt.Errorf("hostlist %q: %w", s, err)
	}
	var n uint64
	for i := range hl.hr {
		if n += hl.hr[i].count(); n > MaxExpandHosts {
			return nil, fmt.Errorf("hostlist %q: more than %d hosts", s, MaxExpandHosts)
		}
	}
	return hl.hosts(int(n)), nil
}
