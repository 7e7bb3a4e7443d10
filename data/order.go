package data

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"sync"
)

// orders hands out a dataset's shuffled row orders. Asked for epoch e, it
// also starts making e+1's in the background, so the next epoch's first
// step does not wait for a shuffle: 262,144 rows take about 2 ms here,
// which the seed MLP at batch 256 used to pay on the first step of every
// epoch (about 2 µs over each of its 1,024 steps). It keeps only the order
// last asked for and the one after it: two permutations of the rows,
// 4 bytes a row each, where one of 8 bytes a row was made before.
type orders struct {
	mu      sync.Mutex
	noAhead bool            // the dataset serves one epoch (Pipe mode)
	kept    []*epochShuffle // at most the last asked for and the next
}

// maxShuffledRows is the most rows a shuffled dataset may have.
const maxShuffledRows uint64 = math.MaxUint32

// epochShuffle is one epoch's order, ready once done is closed.
type epochShuffle struct {
	seed  int64
	epoch int
	done  chan struct{}
	perm  []uint32
}

// get returns the order of (seed, epoch) over n rows, made now or taken
// from the one made ahead, and starts making the next epoch's. The slice
// is shared: read it, never write it.
func (o *orders) get(n int, seed int64, epoch int) []uint32 {
	o.mu.Lock()
	cur := o.find(seed, epoch, n)
	o.kept = []*epochShuffle{cur}
	if !o.noAhead {
		o.kept = append(o.kept, o.find(seed, epoch+1, n))
	}
	o.mu.Unlock()
	<-cur.done
	return cur.perm
}

// find returns the kept order of (seed, epoch), or starts making it. Call
// with mu held.
func (o *orders) find(seed int64, epoch, n int) *epochShuffle {
	for _, k := range o.kept {
		if k.seed == seed && k.epoch == epoch {
			return k
		}
	}
	k := &epochShuffle{seed: seed, epoch: epoch, done: make(chan struct{})}
	go func() {
		k.perm = epochOrder(n, seed, epoch)
		close(k.done)
	}()
	return k
}

// epochOrder is the epoch's row order: a permutation that depends only on
// (seed, epoch), so every rank computes the same one without talking. The
// Fisher-Yates shuffle is written out over PCG's raw output (whose
// sequence math/rand/v2 guarantees) rather than rand.Perm, whose algorithm
// is not promised to stay the same across Go releases; a checkpoint resumed
// by a newer binary then still sees the same order. Rows are numbered in
// 32 bits: Dataset.check refuses to shuffle more (maxShuffledRows).
func epochOrder(n int, seed int64, epoch int) []uint32 {
	perm := make([]uint32, n)
	for i := range perm {
		perm[i] = uint32(i)
	}
	pcg := rand.NewPCG(uint64(seed), uint64(epoch))
	for i := n - 1; i > 0; i-- {
		j := int(boundedUint64(pcg, uint64(i+1)))
		perm[i], perm[j] = perm[j], perm[i]
	}
	return perm
}

// boundedUint64 is a uniform value in [0, n) by Lemire's multiply-and-
// reject method (no modulo bias).
func boundedUint64(src *rand.PCG, n uint64) uint64 {
	hi, lo := bits.Mul64(src.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(src.Uint64(), n)
		}
	}
	return hi
}
