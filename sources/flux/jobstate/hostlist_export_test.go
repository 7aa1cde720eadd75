package jobstate

import (
	"slices"
	"strings"
	"testing"
)

// The expansions of libhostlist's codec tests (flux-core
// src/common/libhostlist/test/hostlist.c) and RFC 29's examples.
func TestExpandHostlist(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"vm", "vm"},
		{"foo-1a-2,foo-1a-3", "foo-1a-2 foo-1a-3"},
		{"foo1,foo2,foo3,fooi", "foo1 foo2 foo3 fooi"},
		{"fooi,foo[1-3,5,7-8]", "fooi foo1 foo2 foo3 foo5 foo7 foo8"},
		{",1,2,3,", "1 2 3"},
		{"[1-5,9]", "1 2 3 4 5 9"},
		{"foo[1,3]-bar", "foo1-bar foo3-bar"},
		{"[00-03]p", "00p 01p 02p 03p"},
		{"p[00-3]p", "p00p p01p p02p p03p"},
		{"14636", "14636"},
		{"foo[12,4,1-2]", "foo12 foo4 foo1 foo2"},
		{"node[9-10]", "node9 node10"},
		{"node[09-10]", "node09 node10"},
		{"node[009-010,11]", "node009 node010 node11"},
		{"node[0-3],login[1,2]", "node0 node1 node2 node3 login1 login2"}, // RFC 29
		{"", ""},
	} {
		got, err := ExpandHostlist(tc.in)
		if err != nil {
			t.Errorf("ExpandHostlist(%q): %v", tc.in, err)
			continue
		}
		if want := strings.Fields(tc.want); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("ExpandHostlist(%q) = %q, want %q", tc.in, got, want)
		}
	}
	for _, bad := range []string{"foo[1-2", "foo]", "foo[2-1]", "foo[a]", "foo[1--2]", "foo[]", "n[0-99999999]"} {
		got, err := ExpandHostlist(bad)
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ExpandHostlist(%q) = %q, %v; want an error naming the list", bad, got, err)
		}
	}
	// Many ranges, each within libhostlist's bounds, still stop at the cap.
	big := "n[" + strings.Repeat("0-9999,", 200) + "0]"
	if _, err := ExpandHostlist(big); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("ExpandHostlist of 2M hosts: %v", err)
	}
}
