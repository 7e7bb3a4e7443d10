package hostlist

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Whole is the longest list written whole.
const Whole = 6

// MaxName is the most bytes of one name written; a longer name is cut and
// ends in "…" (a DNS label, a SageMaker host name, is at most 63).
const MaxName = 64

// Short writes hosts for a sentence: "[algo-1 algo-2 algo-3]" up to
// [Whole] names, else "[algo-1 algo-2 … algo-500] (500 hosts)". The
// result is at most about 4*[MaxName] bytes, however long the list.
func Short(hosts []string) string { return Abbrev(hosts, "hosts") }

// Abbrev is [Short] for any list: noun names its items in the count
// ("[a.npy b.npy … z.npy] (40 files)").
func Abbrev(items []string, noun string) string {
	if len(items) <= Whole {
		names := make([]string, len(items))
		for i, s := range items {
			names[i] = Name(s)
		}
		return "[" + strings.Join(names, " ") + "]"
	}
	return fmt.Sprintf("[%s %s … %s] (%d %s)", Name(items[0]), Name(items[1]), Name(items[len(items)-1]), len(items), noun)
}

// Name is one name for a sentence: s cut to MaxName bytes on a character
// boundary, ending in "…" when cut.
func Name(s string) string {
	if len(s) <= MaxName {
		return s
	}
	cut := MaxName - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
