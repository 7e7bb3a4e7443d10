package hostlist

import (
	"fmt"
	"strings"
	"testing"
)

func algo(n int) []string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("algo-%d", i+1)
	}
	return hosts
}

func TestShort(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, tc := range []struct {
		name  string
		hosts []string
		want  string
	}{
		{"none", nil, "[]"},
		{"one", algo(1), "[algo-1]"},
		{"two, as %v", algo(2), fmt.Sprint(algo(2))},
		{"six whole", algo(6), "[algo-1 algo-2 algo-3 algo-4 algo-5 algo-6]"},
		{"seven", algo(7), "[algo-1 algo-2 … algo-7] (7 hosts)"},
		{"500", algo(500), "[algo-1 algo-2 … algo-500] (500 hosts)"},
		{"long name cut", []string{long, "b"}, "[" + strings.Repeat("x", MaxName-len("…")) + "… b]"},
		{"cut on a character boundary", []string{strings.Repeat("é", 40)}, "[" + strings.Repeat("é", 30) + "…]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Short(tc.hosts); got != tc.want {
				t.Errorf("Short = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAbbrevNoun(t *testing.T) {
	files := []string{"a.npy", "b.npy", "c.npy", "d.npy", "e.npy", "f.npy", "g.npy", "h.npy"}
	if got, want := Abbrev(files, "files"), "[a.npy b.npy … h.npy] (8 files)"; got != want {
		t.Errorf("Abbrev = %q, want %q", got, want)
	}
}

// TestShortIsBounded: however many and however long the names, the list
// takes a bounded share of a 1024-character failure reason.
func TestShortIsBounded(t *testing.T) {
	hosts := make([]string, 10000)
	for i := range hosts {
		hosts[i] = strings.Repeat("h", 1000) + fmt.Sprint(i)
	}
	if got := Short(hosts); len(got) > 4*MaxName+32 {
		t.Errorf("Short of 10000 long names is %d bytes: %q", len(got), got)
	}
	if got := Short(hosts[:Whole]); len(got) > Whole*(MaxName+1)+2 {
		t.Errorf("Short of %d long names is %d bytes", Whole, len(got))
	}
}
