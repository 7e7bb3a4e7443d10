package fit

import (
	"math"
	"slices"
	"time"
)

// TimingVersion is the version of timing.json's schema (Timing). Fields
// are only ever added within a version; a field that changes meaning or
// goes away takes a new version.
const TimingVersion = 1

// Timing is what timing.json (in output/data, written by rank 0) holds:
// how fast this run trained, per epoch and overall, and how long it took to
// start. The README's "timing.json" section documents every field; rank 0's
// clock measures, and examples count every process's rows.
type Timing struct {
	Version       int `json:"version"` // TimingVersion
	Hosts         int `json:"hosts"`   // training processes (hosts x processes per host)
	BatchSize     int `json:"batch_size"`
	StepsPerEpoch int `json:"steps_per_epoch"` // of the last epoch
	// StepsPerCall is the train steps per session call at the last
	// epoch's end: steps_per_execution, or what "auto" chose (1 while it
	// still probes, and for several processes; the K on trial while its
	// trial runs).
	StepsPerCall int `json:"steps_per_call"`
	// Examples is the training rows of one pass over the data, all hosts.
	Examples int `json:"examples"`
	// Inline is where train steps run their ops, as the first steps
	// found (nil: not probed: the job set inter_op_threads, or training
	// ended first).
	Inline *InlineTiming `json:"inline,omitempty"`
	// Executor is the TensorFlow executor train steps ended on: "default",
	// or "single_threaded" after the move (single.go), which took
	// ExecutorMoveSeconds (the move and the first step there).
	Executor            string  `json:"executor"`
	ExecutorMoveSeconds float64 `json:"executor_move_seconds,omitempty"`
	// ExecutorWeighed is what executor "auto" weighed the move by (nil
	// where it weighed none: see ExecutorWeighing).
	ExecutorWeighed *ExecutorWeighing `json:"executor_weighed,omitempty"`

	Startup Startup `json:"startup"`
	// Epochs is every epoch this run trained (a resumed run starts at
	// its checkpoint's epoch).
	Epochs []EpochTiming `json:"epochs"`
	// Overall covers every epoch of the run; AfterFirstEpoch the epochs
	// after its first (nil with one epoch), which is what throughput
	// comparisons quote: the first holds TensorFlow's one-time work.
	Overall         Span  `json:"overall"`
	AfterFirstEpoch *Span `json:"after_first_epoch,omitempty"`

	// Kept from before version 1, one value per epoch: the epoch's wall
	// time and how long its steps waited for their batch.
	EpochSeconds []float64 `json:"epoch_seconds"`
	InputSeconds []float64 `json:"input_wait_seconds"`
	// AverageSeconds is, per averaging (before validation, checkpoints and
	// the save), the time spent averaging non-trainable state
	// (BatchNormalization statistics) over processes; the first includes
	// TensorFlow's one-time set-up of the read and assign functions.
	AverageSeconds []float64 `json:"state_average_seconds,omitempty"`
}

// ExecutorWeighing is what executor "auto" weighed its move by
// (single.go), rank 0's as all of timing.json. None where nothing was
// weighed: the pool chosen, another executor asked for, a model that
// cannot move, inter_op_threads N (nothing timed), steps_per_execution
// above 1, or training ended before the probe chose.
type ExecutorWeighing struct {
	// StepSeconds is a train step in the calling thread: the probe's
	// fastest, or with inter_op_threads -1 the fastest "auto" timed
	// itself.
	StepSeconds float64 `json:"step_seconds"`
	// StepsLeft is about how many train steps the job had left.
	StepsLeft int `json:"steps_left"`
	// Worth: the steps left, at StepSeconds each, last at least moveWorth
	// first steps (Startup.FirstStepSeconds).
	Worth bool `json:"worth"`
	// Move: every process found it worth (one process: Worth), so the
	// move was tried; Executor says whether it held.
	Move bool `json:"move"`
}

// InlineTiming is the probe's last finding (inline.go): the fastest train
// step it timed in TensorFlow's inter-op pool and in the calling thread,
// and which training used from there (rank 0's); Probes counts the times
// it timed both ways, Switches the choices that changed the one before.
type InlineTiming struct {
	CallingThread            bool    `json:"calling_thread"`
	PoolStepSeconds          float64 `json:"pool_step_seconds"`
	CallingThreadStepSeconds float64 `json:"calling_thread_step_seconds"`
	Probes                   int     `json:"probes"`
	Switches                 int     `json:"switches"`
}

// Startup is the time from the process's start to its first finished
// train call. The steps are consecutive: process start, then
// libraries_seconds later Go's init, ..., to_first_step_seconds after the
// start the first call begins, first_step_seconds later it ends.
type Startup struct {
	// ProcessStartUnix is when the kernel started this process (Unix
	// seconds, to 10 ms); on systems without /proc, Go's init instead.
	ProcessStartUnix float64 `json:"process_start_unix"`
	// LibrariesSeconds is process start to Go's init: exec, the dynamic
	// loading of libtensorflow and its static initializers.
	LibrariesSeconds float64 `json:"libraries_seconds"`
	// ModelLoadSeconds is loading the training SavedModel into a session.
	ModelLoadSeconds float64 `json:"model_load_seconds"`
	// ToFirstStepSeconds is process start to the start of the first
	// train step: the above, the channels opened, hosts joined, weights
	// broadcast, the first batch read.
	ToFirstStepSeconds float64 `json:"to_first_step_seconds"`
	// FirstStepSeconds is the first train call, whole: TensorFlow prepares
	// the step's function on its first run (graph optimization, kernels;
	// XLA compilation when the step is compiled). With steps_per_execution
	// above 1 that call ran FirstCallSteps steps, and its time is not
	// split among them: the preparation is the first call's.
	FirstStepSeconds float64 `json:"first_step_seconds"`
	// FirstStepEndUnix is when the first train call ended (Unix seconds),
	// so a harness can time from its own clock.
	FirstStepEndUnix float64 `json:"first_step_end_unix"`
	// FirstCallSteps is how many train steps that call ran (1, or the
	// first block's).
	FirstCallSteps int `json:"first_call_steps"`
}

// EpochTiming is one epoch's Span.
type EpochTiming struct {
	Epoch int `json:"epoch"` // 1-based, as in the epoch lines
	Span
}

// Span is the throughput of some epochs.
type Span struct {
	// Seconds is their wall time: steps, epoch metrics, validation and
	// epoch-end callbacks (not the checkpoint after an epoch).
	Seconds           float64 `json:"seconds"`
	Steps             int     `json:"steps"`
	Examples          int     `json:"examples"` // rows trained, all processes
	ExamplesPerSecond float64 `json:"examples_per_second"`
	// StepSeconds is the time of one train step as the loop sees it:
	// from asking for the batch to the step's end (input wait, the
	// session call, the all-reduce, the step's callbacks).
	StepSeconds Dist `json:"step_seconds"`
	// InputWaitSeconds is the steps' time spent waiting for their batch
	// (near zero when prefetch keeps up); AllReduceSeconds in the gradient
	// all-reduce (zero on one process). Each share is of StepSeconds.Total.
	InputWaitSeconds float64 `json:"input_wait_seconds"`
	InputWaitShare   float64 `json:"input_wait_share"`
	AllReduceSeconds float64 `json:"allreduce_seconds"`
	AllReduceShare   float64 `json:"allreduce_share"`
}

// Dist is a distribution of step times in seconds; percentiles are to
// within 0.6% (histogram buckets), Mean and Total exact.
type Dist struct {
	Total float64 `json:"total"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// initAt is Go's init of this program: the libraries are loaded by then.
var initAt = time.Now()

// clock records the loop's steps for Timing.
type clock struct {
	processStart time.Time
	firstDone    bool
	startup      Startup

	epoch, overall, steady spanClock
	stepRows               int // rows of the step just run, all processes (set by the step)
}

// spanClock accumulates steps.
type spanClock struct {
	steps, examples int
	wait, allReduce time.Duration
	total, maxStep  time.Duration
	seconds         float64
	hist            histogram
}

func newClock() clock {
	start, ok := processStart()
	if !ok {
		start = initAt
	}
	return clock{processStart: start, startup: Startup{
		ProcessStartUnix: unixSeconds(start),
		LibrariesSeconds: max(0, initAt.Sub(start).Seconds()),
	}}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// step records one train step: asked for its batch at asked, got it at
// got, done at done; rows come from stepRows.
func (c *clock) step(asked, got, done time.Time) {
	c.firstCall(got, done, 1)
	c.epoch.add(done.Sub(asked), got.Sub(asked), c.stepRows)
	c.stepRows = 0
}

// firstCall records the start-up's end, the first train call of steps
// steps, started at got and done at done; later calls change nothing.
func (c *clock) firstCall(got, done time.Time, steps int) {
	if c.firstDone {
		return
	}
	c.firstDone = true
	c.startup.ToFirstStepSeconds = got.Sub(c.processStart).Seconds()
	c.startup.FirstStepSeconds = done.Sub(got).Seconds()
	c.startup.FirstStepEndUnix = unixSeconds(done)
	c.startup.FirstCallSteps = steps
}

// allReduced records time spent in the step's gradient all-reduce.
func (c *clock) allReduced(d time.Duration) { c.epoch.allReduce += d }

func (s *spanClock) add(step, wait time.Duration, rows int) {
	s.steps++
	s.examples += rows
	s.wait += wait
	s.total += step
	s.maxStep = max(s.maxStep, step)
	s.hist.add(step)
}

func (s *spanClock) merge(o *spanClock) {
	s.steps += o.steps
	s.examples += o.examples
	s.wait += o.wait
	s.allReduce += o.allReduce
	s.total += o.total
	s.maxStep = max(s.maxStep, o.maxStep)
	s.seconds += o.seconds
	s.hist.merge(&o.hist)
}

func (s *spanClock) span() Span {
	sp := Span{
		Seconds: s.seconds, Steps: s.steps, Examples: s.examples,
		InputWaitSeconds: s.wait.Seconds(), AllReduceSeconds: s.allReduce.Seconds(),
	}
	if s.seconds > 0 {
		sp.ExamplesPerSecond = float64(s.examples) / s.seconds
	}
	if s.steps > 0 {
		total := s.total.Seconds()
		sp.StepSeconds = Dist{
			Total: total, Mean: total / float64(s.steps), Max: s.maxStep.Seconds(),
			P50: s.hist.quantile(0.50, s.maxStep), P90: s.hist.quantile(0.90, s.maxStep), P99: s.hist.quantile(0.99, s.maxStep),
		}
		if total > 0 {
			sp.InputWaitShare = s.wait.Seconds() / total
			sp.AllReduceShare = s.allReduce.Seconds() / total
		}
	}
	return sp
}

// endEpoch closes the epoch's span into t.
func (c *clock) endEpoch(t *Timing, epoch int, took time.Duration) {
	c.epoch.seconds = took.Seconds()
	e := c.epoch.span()
	t.Epochs = append(t.Epochs, EpochTiming{Epoch: epoch, Span: e})
	t.EpochSeconds = append(t.EpochSeconds, e.Seconds)
	t.InputSeconds = append(t.InputSeconds, e.InputWaitSeconds)
	if len(t.Epochs) > 1 {
		c.steady.merge(&c.epoch)
		s := c.steady.span()
		t.AfterFirstEpoch = &s
	}
	c.overall.merge(&c.epoch)
	t.Overall = c.overall.span()
	c.epoch = spanClock{}
}

// histogram counts durations in buckets 2^(1/64) wide (about 1.1%) from
// 1 µs up; what falls below 1 µs counts in the first.
type histogram struct {
	counts []uint64
	n      uint64
}

const bucketsPerOctave = 64

func (h *histogram) add(d time.Duration) {
	i := 0
	if us := float64(d) / float64(time.Microsecond); us > 1 {
		i = int(math.Log2(us) * bucketsPerOctave)
	}
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]uint64, i+1-len(h.counts))...)
	}
	h.counts[i]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	if len(o.counts) > len(h.counts) {
		h.counts = append(h.counts, make([]uint64, len(o.counts)-len(h.counts))...)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile is the q-quantile in seconds (the nearest-rank step's bucket,
// at its geometric middle, no more than the largest step).
func (h *histogram) quantile(q float64, largest time.Duration) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	i := slices.IndexFunc(h.counts, func(c uint64) bool { seen += c; return seen >= rank })
	mid := math.Exp2((float64(i)+0.5)/bucketsPerOctave) * 1e-6
	return min(mid, largest.Seconds())
}
