package data

import (
	"os"
	"slices"
)

// Reading ahead of the batches. A channel's files are mapped with
// MADV_RANDOM (mapFile), so a row that is not in the page cache costs one
// synchronous read per 4 KiB page when Gather touches it: on a file that
// is not in memory (larger than it, or not read since the job started)
// the input ran at about 76 MB/s on a disk that reads 936 MB/s (a probe;
// BENCHMARKS.md). The producer asks the kernel for the rows of the batches
// a little ahead of the one it gathers: the reads are queued together and
// the disk works on many at once, while memory stays bounded.

// prefetcher is a source whose rows can be read ahead of Gather.
type prefetcher interface {
	// cold reports whether some of its rows are not in memory now.
	cold() bool
	// prefetch asks for rows to be read in the background.
	prefetch(rows []int)
}

// Bounds of the read-ahead: the batches whose rows are asked for ahead of
// the one gathered, by their bytes (a few dozen megabytes keep a disk's
// queue full; the pages stay in the page cache until they are used).
const (
	prefetchAheadBytes = 64 << 20
	maxPrefetchAhead   = 64
)

// readAhead turns the read-ahead on; a variable for BenchmarkColdEpoch's
// arm without it.
var readAhead = true

// coldSources are d's sources with rows not in memory now (checked at each
// epoch's start: a file larger than memory always is, a small one read
// once stays in the page cache and is not asked for again).
func (d *Dataset) coldSources() []prefetcher {
	var cold []prefetcher
	if !readAhead {
		return nil
	}
	for _, name := range d.names {
		if p, ok := d.sources[name].(prefetcher); ok && p.cold() {
			cold = append(cold, p)
		}
	}
	return cold
}

// prefetchAhead is how many batches of batchBytes each to ask for ahead.
func prefetchAhead(batchBytes int) int {
	return min(max(prefetchAheadBytes/max(batchBytes, 1), 1), maxPrefetchAhead)
}

func (a *Array) cold() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return !a.closed && a.mapping != nil && !resident(a.mapping)
}

// prefetch asks the kernel for the pages rows lie on, neighbouring pages
// in one call. A Fortran-ordered array's rows are spread over the whole
// file: not asked for.
func (a *Array) prefetch(rows []int) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed || a.mapping == nil || a.fidx != nil || a.rowBytes == 0 {
		return
	}
	page := os.Getpagesize()
	base := len(a.mapping) - len(a.data) // the header's bytes before the data, in the first page
	n := a.hdr.Shape[0]
	spans := make([][2]int, 0, len(rows)) // pages [first, last]
	for _, r := range rows {
		if r < 0 || r >= n {
			continue // Gather reports it
		}
		lo := base + r*a.rowBytes
		spans = append(spans, [2]int{lo / page, (lo + a.rowBytes - 1) / page})
	}
	slices.SortFunc(spans, func(x, y [2]int) int { return x[0] - y[0] })
	for i := 0; i < len(spans); {
		first, last := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0] <= last+1; i++ {
			last = max(last, spans[i][1])
		}
		adviseWillNeed(a.mapping[first*page : min((last+1)*page, len(a.mapping))])
	}
}

func (s *partsSource) cold() bool {
	return slices.ContainsFunc(s.parts, (*Array).cold)
}

func (s *partsSource) prefetch(rows []int) {
	byPart := make(map[int][]int)
	for _, r := range rows {
		if r >= 0 && r < s.Len() {
			p := s.partOf(r)
			byPart[p] = append(byPart[p], r-s.starts[p])
		}
	}
	for p, local := range byPart {
		s.parts[p].prefetch(local)
	}
}

func (r rowRange) cold() bool {
	p, ok := r.rowSource.(prefetcher)
	return ok && p.cold()
}

func (r rowRange) prefetch(rows []int) {
	p, ok := r.rowSource.(prefetcher)
	if !ok {
		return
	}
	shifted := make([]int, 0, len(rows))
	for _, row := range rows {
		if row >= 0 && row < r.n {
			shifted = append(shifted, row+r.lo)
		}
	}
	p.prefetch(shifted)
}
