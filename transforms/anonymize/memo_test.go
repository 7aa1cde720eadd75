package anonymize

import (
	"strconv"
	"testing"
)

// The pseudonym and uid tables never answer for another value, rule or
// key: many more values than slots (so slots are taken over again and
// again), two rules on the same values, and a new key, each checked
// against the pseudonym computed directly.
func TestMemoAnswersOnlyForItsValue(t *testing.T) {
	tr := newTransform(t, "")
	u, n := &rule{Rule: Rule{Action: Hash, Prefix: "u-", Length: 16}}, &rule{Rule: Rule{Action: Hash, Prefix: "n-", Length: 12}}
	check := func(pass int) {
		for i := range 3 * memoSlots {
			v := "value-" + strconv.Itoa(i%(memoSlots+7)) // repeats, at other slots' turns
			if got, want := tr.apply(u, 1, v), tr.Pseudonym("u-", 16, v); got != want {
				t.Fatalf("pass %d, rule u, %s: %s, want %s", pass, v, got, want)
			}
			if got, want := tr.apply(n, 2, v), tr.Pseudonym("n-", 12, v); got != want {
				t.Fatalf("pass %d, rule n, %s: %s, want %s", pass, v, got, want)
			}
		}
		for uid := uint32(0); uid < 4*idSlots; uid++ {
			if got, want := tr.pseudoUID(uid%(idSlots+3)*7919), tr.pseudoID(strconv.FormatUint(uint64(uid%(idSlots+3)*7919), 10)); got != want {
				t.Fatalf("pass %d, uid %d: %d, want %d", pass, uid, got, want)
			}
		}
	}
	check(0)
	before := tr.apply(u, 1, "value-1")
	tr.SetKey([]byte("another key, 16 bytes or more"))
	if tr.apply(u, 1, "value-1") == before {
		t.Fatal("a new key answered with the old key's pseudonym")
	}
	check(1)
}
