package jobdb

import (
	"encoding/json"
	"testing"
)

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "node0001", `a"b\c`, "tab\there\x01\x1f", "nœud-é"} {
		var got string
		if err := json.Unmarshal(appendJSONString(nil, s), &got); err != nil || got != s {
			t.Errorf("%q: decoded %q, %v", s, got, err)
		}
	}
}
