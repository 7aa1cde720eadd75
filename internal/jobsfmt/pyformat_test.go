package jobsfmt

import "testing"

// Expected values are what CPython 3 prints for the same calls.
func TestPython(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{pyRepr(1795394503.2594483), "1795394503.2594483"},
		{pyRepr(1), "1.0"},
		{pyRepr(1e16), "1e+16"},
		{pyRepr(0.0001), "0.0001"},
		{pyRepr(0.00001), "1e-05"},
		{fsd(0.0005), "0s"},
		{fsd(1.2581372), "1.258s"},
		{fsd(30.333), "30.33s"},
		{fsd(89.64), "1.494m"},
		{fsd(7200), "2h"},
		{fsd(90000), "1.042d"},
		{timedelta(3), "0:00:03"},
		{timedelta(90061), "1 day, 1:01:01"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for _, tc := range []struct {
		v    value
		spec string
		want string
	}{
		{str("abcdefghijkl"), "<10.10", "abcdefghij"},
		{str("ƒCHcyt63"), ">12", "    ƒCHcyt63"},
		{str("x"), "^5", "  x  "},
		{str("x"), "*>3", "**x"},
		{integer(5), ">6", "     5"},
		{integer(5), "", "5"},
		{integer(-5), "04", "-005"},
		{integer(1234567), ",", "1,234,567"},
		{integer(255), "#x", "0xff"},
		{float(2.5), ".2f", "2.50"},
		{float(2.5), ">8", "     2.5"},
		{float(1234.5), ".3e", "1.234e+03"},
		{boolean(true), "", "True"},
		{str(""), "d", ""},
	} {
		got, err := pyFormat(tc.v, tc.spec)
		if err != nil || got != tc.want {
			t.Errorf("format(%v, %q) = %q, %v; want %q", tc.v, tc.spec, got, err, tc.want)
		}
	}
	for _, bad := range []struct {
		v    value
		spec string
	}{{str("x"), "d"}, {integer(1), ".2"}, {float(1), "d"}, {str("x"), "<<<"}} {
		if got, err := pyFormat(bad.v, bad.spec); err == nil {
			t.Errorf("format(%v, %q) = %q, want an error", bad.v, bad.spec, got)
		}
	}
}

// The truncation marker and the h suffix, as flux's UtilFormatter.
func TestFluxSpecSuffixes(t *testing.T) {
	env := &Env{F58Prefix: "f"}
	in := &Info{env: env}
	for _, tc := range []struct {
		v    value
		spec string
		want string
	}{
		{str("running-active"), "<10.10+", "running-a+"},
		{str("dep-ok"), "<10.10+", "dep-ok    "},
		{str(""), ">6h", "     -"},
		{float(0), ">6h", "     -"},
		{str("0s"), ">8h", "       -"},
		{integer(2), ">6h", "     2"},
	} {
		got, err := in.formatValue(tc.v, "", tc.spec)
		if err != nil || got != tc.want {
			t.Errorf("%v with %q = %q, %v; want %q", tc.v, tc.spec, got, err, tc.want)
		}
	}
}
