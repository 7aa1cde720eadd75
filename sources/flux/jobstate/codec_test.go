package jobstate

import (
	"testing"
)

func TestF58(t *testing.T) {
	for _, j := range scenarioJobs(t) {
		if got := F58(j.id); got != j.f58 {
			t.Errorf("F58(%d) = %s, flux printed %s", j.id, got, j.f58)
		}
	}
	// RFC 19's example, and the edges.
	for id, want := range map[uint64]string{
		6731191091817518:     "fuZZybuNNy",
		0:                    "f1",
		57:                   "fz",
		58:                   "f21",
		18446744073709551615: "fjpXCZedGfVQ",
	} {
		if got := F58(id); got != want {
			t.Errorf("F58(%d) = %s, want %s", id, got, want)
		}
	}
}

func TestIdset(t *testing.T) {
	for _, tc := range []struct {
		in    string
		count int
		out   string // encoded back with brackets and ranges
	}{
		{"", 0, ""},
		{"0", 1, "0"},
		{"[0]", 1, "0"},
		{"0-3", 4, "[0-3]"},
		{"[0-1,3,5-7]", 6, "[0-1,3,5-7]"},
		{"0,1,2", 3, "[0-2]"},
		{"1,,2", 2, "[1-2]"},
	} {
		rs, err := decodeIdset(tc.in)
		if err != nil {
			t.Errorf("decodeIdset(%q): %v", tc.in, err)
			continue
		}
		if n := idCount(rs); n != tc.count {
			t.Errorf("decodeIdset(%q): %d ids, want %d", tc.in, n, tc.count)
		}
		var ids []uint32
		for _, r := range rs {
			for id := r.lo; id <= r.hi; id++ {
				ids = append(ids, id)
			}
		}
		if got := encodeIdset(ids); got != tc.out {
			t.Errorf("encode(decode(%q)) = %q, want %q", tc.in, got, tc.out)
		}
	}
	// RFC 22 rules libidset enforces.
	for _, bad := range []string{"01", "3-1", "2-2", "1,0", "0-2,1", "[0", "a", "-1", "1-", "[[0]]", "2147483648"} {
		if _, err := decodeIdset(bad); err == nil {
			t.Errorf("decodeIdset(%q) succeeded", bad)
		}
	}
	if u := unionIDs([]idRange{{0, 1}, {5, 5}}, []idRange{{2, 3}, {5, 7}}); len(u) != 2 || u[0] != (idRange{0, 3}) || u[1] != (idRange{5, 7}) {
		t.Errorf("union = %v", u)
	}
}

func TestHostlist(t *testing.T) {
	// libhostlist's own codec tests (src/common/libhostlist/test/hostlist.c).
	for _, tc := range []struct {
		in, out string
		count   int
	}{
		{"foo-1a-2,foo-1a-3", "foo-1a-[2-3]", 2},
		{"foo1,foo2,foo3,fooi", "foo[1-3],fooi", 4},
		{"foo1,fooi,foo2,foo3", "foo1,fooi,foo[2-3]", 4},
		{"fooi,foo1,foo2,foo3,foo5,foo7,foo8", "fooi,foo[1-3,5,7-8]", 7},
		{"1,2,3,4,5,9", "[1-5,9]", 6},
		{",1,2,3,4,5,9,", "[1-5,9]", 6},
		{"[1-5]", "[1-5]", 5},
		{"foo[1,3]-bar", "foo1-bar,foo3-bar", 2},
		{"[00-03]p", "00p,01p,02p,03p", 4},
		{"p[00-3]p", "p00p,p01p,p02p,p03p", 4},
		{"14636", "14636", 1},
		{"foo12,foo[4,1-2]", "foo[12,4,1-2]", 4},
		{"vm", "vm", 1},
		{"node9,node10", "node[9-10]", 2},
		{"node09,node10", "node[09-10]", 2},
		{"node009,node010,node11", "node[009-010,11]", 3},
	} {
		hl, err := decodeHostlist(tc.in)
		if err != nil {
			t.Errorf("decodeHostlist(%q): %v", tc.in, err)
			continue
		}
		hosts := hl.hosts(1 << 20)
		if len(hosts) != tc.count {
			t.Errorf("decodeHostlist(%q): %d hosts %q, want %d", tc.in, len(hosts), hosts, tc.count)
		}
		if got := hl.encode(); got != tc.out {
			t.Errorf("encode(decode(%q)) = %q, want %q", tc.in, got, tc.out)
		}
		// Re-appending the expanded names one by one, as rlist_nodelist
		// does, gives the same string unless suffixes split ranges.
		re := &hostlist{}
		for _, h := range hosts {
			re.appendHost(h)
		}
		if tc.in != "foo[1,3]-bar" && tc.in[0] != '[' && tc.in != "p[00-3]p" && re.encode() != tc.out {
			t.Errorf("re-append %q = %q, want %q", hosts, re.encode(), tc.out)
		}
	}
	for _, bad := range []string{"foo[1-2", "foo]", "foo[2-1]", "foo[a]", "foo[1--2]", "foo[]"} {
		if _, err := decodeHostlist(bad); err == nil {
			t.Errorf("decodeHostlist(%q) succeeded", bad)
		}
	}
}

func TestJtree(t *testing.T) {
	root, err := parseTree([]byte(`{"a":{"b":1},"c":[1,{"x":null}],"d":"s"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := setPath(root, "a.b", &node{raw: []byte(`2`)}); err != nil {
		t.Fatal(err)
	}
	if err := setPath(root, "e.f.g", &node{raw: []byte(`true`)}); err != nil {
		t.Fatal(err)
	}
	// Paths through a non-object, or with empty components, fail.
	for _, p := range []string{"d.x", "a..b", ".a", "a."} {
		if setPath(root, p, &node{raw: []byte(`0`)}) == nil {
			t.Errorf("setPath %q succeeded", p)
		}
	}
	want := `{"a":{"b":2},"c":[1,{"x":null}],"d":"s","e":{"f":{"g":true}}}`
	if got := string(root.bytes()); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// clearNull leaves arrays alone, drops null and emptied objects.
	m, _ := parseTree([]byte(`{"a":null,"b":{"c":null},"d":[null],"e":{}}`))
	clearNull(m)
	if got := string(m.bytes()); got != `{"d":[null]}` {
		t.Errorf("clearNull: %s", got)
	}
}
