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
// BENCHMARKS.md). At each epoch's start the producer asks which pages of
// each file are in memory (mincore), and then asks the kernel for the
// rows of the batches a little ahead of the one it gathers: the reads are
// queued together and the disk works on many at once, while memory stays
// bounded. Where most of a file is in memory, only the rows whose pages
// were not are asked for: asking costs a system call per run of pages,
// more than gathering a small row from memory (a file nearly all in
// memory ran 5-8x slower asked for whole, a review found), and where
// nearly all of it is, nothing: the few reads cost less than looking.

// prefetcher is a source whose rows can be read ahead of Gather.
type prefetcher interface {
	// survey is this epoch's read-ahead; nil where every page is in
	// memory now.
	survey() coldRows
}

// coldRows reads a source's rows ahead for one epoch.
type coldRows interface {
	// ask asks the kernel for those of rows not in memory, in the
	// background.
	ask(rows []int)
	// rowCost is the most the kernel reads for one row: its whole pages.
	rowCost() int
}

// Bounds of the read-ahead: the batches whose rows are asked for ahead of
// the one gathered, by the pages they take (a few dozen megabytes keep a
// disk's queue full; the pages stay in the page cache until they are
// used), the share of a file's pages out of memory from which every row
// is asked for (a file larger than memory: the pages in memory at the
// epoch's start are gone before their turn), and the share below which
// none is (2 MiB of a 256 MiB file in 64-byte rows out of memory: an
// epoch 0.84-1.06 s asking for the rows on them, 0.60-0.85 s without).
const (
	prefetchAheadBytes = 64 << 20
	maxPrefetchAhead   = 64
	mostlyColdShare    = 4  // a quarter
	nearlyWarmShare    = 64 // 1.6%
)

// readAhead turns the read-ahead on; a variable for BenchmarkColdEpoch's
// arm without it.
var readAhead = true

// coldSources are the read-aheads of d's sources with pages out of memory
// now.
func (d *Dataset) coldSources() []coldRows {
	if !readAhead {
		return nil
	}
	var cold []coldRows
	for _, name := range d.names {
		if p, ok := d.sources[name].(prefetcher); ok {
			if c := p.survey(); c != nil {
				cold = append(cold, c)
			}
		}
	}
	return cold
}

// prefetchAhead is how many batches of batchSize rows to ask for ahead.
func prefetchAhead(cold []coldRows, batchSize int) int {
	perBatch := 0
	for _, c := range cold {
		perBatch += batchSize * c.rowCost()
	}
	return min(max(prefetchAheadBytes/max(perBatch, 1), 1), maxPrefetchAhead)
}

// arrayRows is an Array's read-ahead: every row, or (resident set) those
// with a page that was out of memory at the epoch's start.
type arrayRows struct {
	a        *Array
	resident []byte // mincore's: bit 0 of each page's byte
}

func (a *Array) survey() coldRows {
	a.mu.RLock()
	defer a.mu.RUnlock()
	// A Fortran-ordered array's rows are spread over the whole file.
	if a.closed || a.mapping == nil || a.fidx != nil || a.rowBytes == 0 {
		return nil
	}
	vec := residency(a.mapping)
	out := pagesOut(vec)
	switch {
	case vec == nil: // the kernel cannot say (or not asked, off Linux)
		return nil
	case out*nearlyWarmShare < len(vec):
		return nil
	case out*mostlyColdShare >= len(vec):
		return arrayRows{a: a}
	}
	return arrayRows{a: a, resident: vec}
}

func (c arrayRows) rowCost() int {
	page := os.Getpagesize()
	return ((c.a.rowBytes+page-1)/page + 1) * page // a row may straddle one more page
}

// ask asks for the pages rows lie on, neighbouring pages in one call.
func (c arrayRows) ask(rows []int) {
	a := c.a
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed || a.mapping == nil {
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
		first, last := lo/page, (lo+a.rowBytes-1)/page
		if c.resident != nil && pagesOut(c.resident[first:last+1]) == 0 {
			continue
		}
		spans = append(spans, [2]int{first, last})
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

// pagesOut counts the pages of mincore's vector not in memory.
func pagesOut(vec []byte) int {
	out := 0
	for _, v := range vec {
		if v&1 == 0 {
			out++
		}
	}
	return out
}

// partsRows is a channel in parts' read-ahead: its cold parts'.
type partsRows struct {
	s     *partsSource
	parts []coldRows // nil for a part in memory
}

func (s *partsSource) survey() coldRows {
	c := partsRows{s: s, parts: make([]coldRows, len(s.parts))}
	for i, a := range s.parts {
		c.parts[i] = a.survey()
	}
	if !slices.ContainsFunc(c.parts, func(p coldRows) bool { return p != nil }) {
		return nil
	}
	return c
}

func (c partsRows) rowCost() int {
	cost := 0
	for _, p := range c.parts {
		if p != nil {
			cost = max(cost, p.rowCost())
		}
	}
	return cost
}

func (c partsRows) ask(rows []int) {
	byPart := make(map[int][]int)
	for _, r := range rows {
		if r >= 0 && r < c.s.Len() {
			if p := c.s.partOf(r); c.parts[p] != nil {
				byPart[p] = append(byPart[p], r-c.s.starts[p])
			}
		}
	}
	for p, local := range byPart {
		c.parts[p].ask(local)
	}
}

// rangeRows is a part of a source's (validation_split's) read-ahead.
type rangeRows struct {
	r     rowRange
	inner coldRows
}

func (r rowRange) survey() coldRows {
	p, ok := r.rowSource.(prefetcher)
	if !ok {
		return nil
	}
	// The whole file is asked about: its pages out of memory may all be
	// the other part's, whose rows are then never asked for.
	if inner := p.survey(); inner != nil {
		return rangeRows{r: r, inner: inner}
	}
	return nil
}

func (c rangeRows) rowCost() int { return c.inner.rowCost() }

func (c rangeRows) ask(rows []int) {
	shifted := make([]int, 0, len(rows))
	for _, row := range rows {
		if row >= 0 && row < c.r.n {
			shifted = append(shifted, row+c.r.lo)
		}
	}
	c.inner.ask(shifted)
}
