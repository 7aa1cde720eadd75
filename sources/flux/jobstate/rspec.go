package jobstate

// R (RFC 20) as job-list reads it: rlist_from_json() in
// src/common/librlist/rlist.c, then parse_R() in job-list/job_data.c.

import (
	"fmt"
	"sort"
)

// rInfo is what job-list takes from R. The nodelist stage can fail on
// its own (no execution.nodelist): job-list then keeps the fields it set
// before that point, so ncores comes with the nodelist.
type rInfo struct {
	expiration float64 // execution.expiration if > 0, else 0
	starttime  float64 // execution.starttime if > 0, else 0
	nnodes     int
	ranks      string
	nodelistOK bool // job-list got as far as nodelist and its core count
	nodelist   string
	ncores     int // cores in R_lite
	ngpus      int // gpus in R_lite
}

type rnode struct {
	rank  uint32
	cores []idRange
	gpus  []idRange
}

// maxRanks bounds the nodes of one R, so a hostile R cannot make us
// allocate billions of them.
const maxRanks = 1 << 17

var (
	rTopFields  = []string{"version", "execution"}
	rExecFields = []string{"R_lite", "nodelist", "nslots", "starttime", "expiration"}
	rLiteFields = []string{"rank", "children"}
)

// parseR reads a validated R object. An error means rlist_from_json would
// fail, and job-list would then leave every R-derived field alone.
func parseR(raw []byte) (rInfo, error) {
	var ri rInfo
	var top [2][]byte
	if err := fields(raw, rTopFields, top[:]); err != nil {
		return ri, fmt.Errorf("R: %v", err)
	}
	version, ok := asInt(top[0])
	if !ok {
		return ri, fmt.Errorf("R.version: want an integer, got %s", describe(top[0]))
	}
	if version != 1 {
		return ri, fmt.Errorf("R.version: %d is not supported", version)
	}
	if kindOf(top[1]) != '{' {
		return ri, fmt.Errorf("R.execution: want an object, got %s", describe(top[1]))
	}
	var ex [5][]byte
	if err := fields(top[1], rExecFields, ex[:]); err != nil {
		return ri, fmt.Errorf("R.execution: %v", err)
	}
	if ex[0] == nil {
		return ri, fmt.Errorf("R.execution.R_lite: missing")
	}
	if ex[2] != nil {
		if _, ok := asInt(ex[2]); !ok {
			return ri, fmt.Errorf("R.execution.nslots: want an integer, got %s", describe(ex[2]))
		}
	}
	for i, name := range []string{"starttime", "expiration"} {
		v := ex[3+i]
		if v == nil {
			continue
		}
		f, ok := asNumber(v)
		if !ok {
			return ri, fmt.Errorf("R.execution.%s: want a number, got %s", name, describe(v))
		}
		if f > 0 {
			if i == 0 {
				ri.starttime = f
			} else {
				ri.expiration = f
			}
		}
	}
	nodes, err := parseRlite(ex[0])
	if err != nil {
		return ri, err
	}
	hosts, err := parseNodelist(ex[1], len(nodes))
	if err != nil {
		return ri, err
	}
	// job-list's parse_R from here on.
	ids := make([]uint32, len(nodes))
	for i := range nodes {
		ids[i] = nodes[i].rank
	}
	ri.nnodes = len(nodes)
	ri.ranks = encodeIdset(ids)
	for i := range nodes {
		ri.ncores += idCount(nodes[i].cores)
		ri.ngpus += idCount(nodes[i].gpus)
	}
	if hosts == nil && len(nodes) > 0 {
		return ri, nil // no hostnames: job-list stops before its core count
	}
	hl := &hostlist{}
	for _, h := range hosts {
		hl.appendHost(h)
	}
	ri.nodelistOK = true
	ri.nodelist = hl.encode()
	return ri, nil
}

// parseRlite returns the nodes of R_lite sorted by rank, entries for the
// same rank merged (rlist_add_rnode).
func parseRlite(v []byte) ([]rnode, error) {
	if kindOf(v) != '[' {
		return nil, nil // jansson's array iteration over a non-array is empty
	}
	var nodes []rnode
	it := arrIter{b: v, trusted: true}
	if err := it.open(); err != nil {
		return nil, err
	}
	for n := 0; ; n++ {
		e, ok, err := it.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		var f [2][]byte
		if kindOf(e) != '{' {
			return nil, fmt.Errorf("R.execution.R_lite[%d]: want an object, got %s", n, describe(e))
		}
		if err := fields(e, rLiteFields, f[:]); err != nil {
			return nil, err
		}
		rankStr, ok := asString(f[0])
		if !ok {
			return nil, fmt.Errorf("R.execution.R_lite[%d].rank: want a string, got %s", n, describe(f[0]))
		}
		if f[1] == nil {
			return nil, fmt.Errorf("R.execution.R_lite[%d].children: missing", n)
		}
		ranks, err := decodeIdset(rankStr)
		if err != nil {
			return nil, fmt.Errorf("R.execution.R_lite[%d].rank: %v", n, err)
		}
		cores, gpus, err := parseChildren(f[1], n)
		if err != nil {
			return nil, err
		}
		if len(nodes)+idCount(ranks) > maxRanks {
			return nil, fmt.Errorf("R.execution.R_lite[%d].rank: more than %d ranks", n, maxRanks)
		}
		for _, r := range ranks {
			for id := uint64(r.lo); id <= uint64(r.hi); id++ {
				nodes = append(nodes, rnode{rank: uint32(id), cores: cores, gpus: gpus})
			}
		}
	}
	sort.SliceStable(nodes, func(i, j int) bool { return nodes[i].rank < nodes[j].rank })
	out := nodes[:0]
	for _, nd := range nodes {
		if k := len(out); k > 0 && out[k-1].rank == nd.rank {
			out[k-1].cores = unionIDs(out[k-1].cores, nd.cores)
			out[k-1].gpus = unionIDs(out[k-1].gpus, nd.gpus)
			continue
		}
		out = append(out, nd)
	}
	return out, nil
}

func parseChildren(v []byte, n int) (cores, gpus []idRange, err error) {
	if kindOf(v) != '{' {
		return nil, nil, nil // json_object_foreach over a non-object: no children
	}
	it := objIter{b: v, trusted: true}
	if err := it.open(); err != nil {
		return nil, nil, err
	}
	for {
		k, val, ok, err := it.next()
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			return cores, gpus, nil
		}
		s, ok := asString(val)
		if !ok {
			return nil, nil, fmt.Errorf("R.execution.R_lite[%d].children.%s: want a string, got %s", n, k, describe(val))
		}
		ids, err := decodeIdset(s)
		if err != nil {
			return nil, nil, fmt.Errorf("R.execution.R_lite[%d].children.%s: %v", n, k, err)
		}
		switch {
		case k.is("core"):
			cores = ids
		case k.is("gpu"):
			gpus = ids
		}
	}
}

// parseNodelist expands execution.nodelist; nil if absent. It must name
// exactly one host per node (rlist_assign_hostlist).
func parseNodelist(v []byte, nnodes int) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	hl := &hostlist{}
	if kindOf(v) == '[' {
		it := arrIter{b: v, trusted: true}
		if err := it.open(); err != nil {
			return nil, err
		}
		for {
			e, ok, err := it.next()
			if err != nil {
				return nil, err
			}
			if !ok {
				break
			}
			s, ok := asString(e)
			if !ok {
				continue // hostlist_append(NULL) adds nothing
			}
			h, err := decodeHostlist(s)
			if err != nil {
				return nil, fmt.Errorf("R.execution.nodelist: %q: %v", s, err)
			}
			hl.hr = append(hl.hr, h.hr...)
		}
	}
	hosts := hl.hosts(nnodes + 1)
	if len(hosts) != nnodes {
		return nil, fmt.Errorf("R.execution.nodelist: %d hosts for %d ranks", len(hosts), nnodes)
	}
	if hosts == nil {
		hosts = []string{}
	}
	return hosts, nil
}
