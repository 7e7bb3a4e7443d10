package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/report"
)

// A checkpoint is a folder ckpt-<epoch>-<step> under the checkpoint dir
// (ckpt-<epoch>-<step>-<fingerprint> where another model's of that name is
// there):
// variables.bin (every variable of the contract, raw, in contract order)
// and state.json (where training stood, the metric state, the history so
// far, and variables.bin's SHA-256) beside its own SHA-256. It is written under a
// temporary name, synced and renamed, so a reader sees all of it or none.
const (
	prefix    = "ckpt-"
	varsFile  = "variables.bin"
	bestFile  = "best.bin"
	hostsFile = "hosts.bin"
	stateFile = "state.json"
	// stateSum is state.json's SHA-256: JSON that reads but is not what
	// was written (an edited step, a longer history) is refused, not
	// resumed. Older checkpoints have none.
	stateSum = "state.json.sha256"
	// Version is the format of state.json and variables.bin. 2: best.bin
	// holds a copy of kept weights per callback that keeps some
	// (callbacks.State.Kept), where 1 held one for all; 1 is still read.
	Version = 2
)

// State is state.json: where training stood.
type State struct {
	Version     int    `json:"version"`
	Fingerprint string `json:"fingerprint"`
	Epoch       int    `json:"epoch"` // 1-based epoch under way
	Step        int    `json:"step"`  // steps of Epoch already trained
	Steps       int    `json:"steps"` // steps per epoch when written
	GlobalStep  int    `json:"global_step"`
	Seed        int64  `json:"seed"`
	Shuffle     bool   `json:"shuffle"`
	BatchSize   int    `json:"batch_size"`
	Hosts       int    `json:"hosts"`
	Rows        int    `json:"rows,omitempty"` // rank 0's training rows in the epoch (0 in older checkpoints)
	// DataSample is a digest of the training data's values (the input
	// package's Channel.Sample); "" for Pipe and sharded channels, and in
	// older checkpoints.
	DataSample string `json:"data_sample,omitempty"`
	// StepsPerEpoch and InitialEpoch place an epoch's steps in the data
	// (steps_per_epoch's cursor); nil in older checkpoints.
	StepsPerEpoch *int      `json:"steps_per_epoch,omitempty"`
	InitialEpoch  *int      `json:"initial_epoch,omitempty"`
	MetricState   []float64 `json:"metric_state"` // every process's own, rank after rank
	// History is the epochs finished so far, as history.json holds them.
	History      json.RawMessage `json:"history"`
	VariablesSHA string          `json:"variables_sha256"`
	VariablesLen int64           `json:"variables_bytes"`
	// Callbacks is the Keras callbacks' state (runtime/callbacks); the
	// weights they keep for the end are best.bin.
	Callbacks json.RawMessage `json:"callbacks,omitempty"`
	BestSHA   string          `json:"best_sha256,omitempty"`
	BestLen   int64           `json:"best_bytes,omitempty"`
	// HostState is every process's own copy of the state the hosts
	// average (BatchNormalization's statistics), where a stop's checkpoint
	// averaged it at a step the job itself would not have: hosts.bin, read
	// back into this field. Its layout is the fit loop's.
	HostState []byte `json:"-"`
	HostsSHA  string `json:"hosts_sha256,omitempty"`
	HostsLen  int64  `json:"hosts_bytes,omitempty"`
}

func name(epoch, step int) string {
	return fmt.Sprintf("%s%06d-%09d", prefix, epoch, step)
}

// Write writes one checkpoint into dir, keeps the newest keep, and returns
// its path. Version and the checksums are filled in. best, when not nil,
// is the weights the callbacks keep for the end.
func Write(dir string, st State, vars []model.Variable, best []byte, hist *report.History, keep int) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("checkpoint dir: %w", err)
	}
	st.Version = Version
	name := name(st.Epoch, st.Step)
	tmp, err := os.MkdirTemp(dir, ".tmp-"+name+"-")
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	defer os.RemoveAll(tmp)

	chunks := make([][]byte, len(vars))
	for i, v := range vars {
		chunks[i] = v.Data
	}
	if st.VariablesLen, st.VariablesSHA, err = writeBlob(filepath.Join(tmp, varsFile), chunks); err != nil {
		return "", fmt.Errorf("checkpoint: write variables: %w", err)
	}
	if best != nil {
		if st.BestLen, st.BestSHA, err = writeBlob(filepath.Join(tmp, bestFile), [][]byte{best}); err != nil {
			return "", fmt.Errorf("checkpoint: write kept weights: %w", err)
		}
	}
	if st.HostState != nil {
		if st.HostsLen, st.HostsSHA, err = writeBlob(filepath.Join(tmp, hostsFile), [][]byte{st.HostState}); err != nil {
			return "", fmt.Errorf("checkpoint: write the hosts' own state: %w", err)
		}
	}
	if st.History, err = json.Marshal(hist); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	sf, err := os.Create(filepath.Join(tmp, stateFile))
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if _, err := sf.Write(raw); err != nil {
		sf.Close()
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if err := syncClose(sf); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	sum := sha256.Sum256(raw)
	if _, _, err := writeBlob(filepath.Join(tmp, stateSum), [][]byte{[]byte(hex.EncodeToString(sum[:]) + "\n")}); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if err := syncPath(tmp); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	final, suffix := filepath.Join(dir, name), "-"+st.Fingerprint[:min(8, len(st.Fingerprint))]
	if owner := ownerOf(final); owner != "" && owner != st.Fingerprint {
		// Another model's of the same epoch and step stays, as prune
		// leaves it (it was replaced); this one is named after its model
		// too, which sorts it after the other of its place.
		final += suffix
	}
	if err := os.RemoveAll(final); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if !strings.HasSuffix(final, suffix) {
		// One of this place named after its model, written while another
		// model's held the name, is this one's older copy: it would sort
		// first and be resumed.
		os.RemoveAll(final + suffix)
	}
	if err := syncPath(dir); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if err := prune(dir, keep, st.Fingerprint); err != nil {
		return "", err
	}
	// What a killed writer left half-written: only this process writes
	// here, and SageMaker would upload these with the checkpoints.
	stale, _ := filepath.Glob(filepath.Join(dir, ".tmp-"+prefix+"*")) // Write's own temporary names
	for _, p := range stale {
		os.RemoveAll(p)
	}
	return final, nil
}

// writeBlob writes chunks to path, synced, and returns its length and
// SHA-256.
func writeBlob(path string, chunks [][]byte) (int64, string, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, "", err
	}
	h := sha256.New()
	w := io.MultiWriter(f, h)
	var n int64
	for _, c := range chunks {
		k, err := w.Write(c)
		n += int64(k)
		if err != nil {
			f.Close()
			return 0, "", err
		}
	}
	if err := syncClose(f); err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// readBlob reads path and checks it against its length and SHA-256.
func readBlob(path string, n int64, sha string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	if int64(len(b)) != n || hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("%s does not match its checksum (partial or corrupt)", filepath.Base(path))
	}
	return b, nil
}

func syncClose(f *os.File) error {
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncPath(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// listCheckpoints returns the checkpoint folders in dir, newest first.
func list(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint dir: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	// Names sort by (epoch, step): fixed-width numbers.
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	for i, n := range names {
		names[i] = filepath.Join(dir, n)
	}
	return names, nil
}

// prune keeps the newest keep checkpoints of the model with this
// fingerprint and removes its older ones. Another model's checkpoints are
// not counted and not removed: counted, newer ones removed this job's own
// as soon as they were written, and a stopped job resumed from nothing.
// Folders whose state cannot be read (a torn write of an older sagefit, a
// corrupt copy) go once they are older than the oldest one kept.
func prune(dir string, keep int, fingerprint string) error {
	if keep <= 0 {
		return nil
	}
	all, err := list(dir)
	if err != nil {
		return err
	}
	kept := 0
	for _, path := range all {
		switch owner := ownerOf(path); {
		case owner == "" && kept < keep, owner != "" && owner != fingerprint:
			continue
		case owner == fingerprint:
			if kept++; kept <= keep {
				continue
			}
		}
		if err := os.RemoveAll(path); err != nil {
			return fmt.Errorf("remove old checkpoint: %w", err)
		}
	}
	return nil
}

// ownerOf is the fingerprint of the model a checkpoint was written for,
// "" where its state cannot be read.
func ownerOf(path string) string {
	raw, err := os.ReadFile(filepath.Join(path, stateFile))
	if err != nil {
		return ""
	}
	var st struct {
		Fingerprint string `json:"fingerprint"`
	}
	if json.Unmarshal(raw, &st) != nil {
		return ""
	}
	return st.Fingerprint
}

// Loaded is a checkpoint read back and verified.
type Loaded struct {
	Path    string
	State   State
	Vars    []byte // every variable's bytes, in contract order
	Best    []byte // the weights the callbacks keep for the end, or nil
	History *report.History
}

// readCheckpoint reads and verifies one checkpoint folder.
func read(path, fingerprint string) (*Loaded, error) {
	raw, err := os.ReadFile(filepath.Join(path, stateFile))
	if err != nil {
		return nil, err
	}
	if want, err := os.ReadFile(filepath.Join(path, stateSum)); err == nil {
		if sum := sha256.Sum256(raw); strings.TrimSpace(string(want)) != hex.EncodeToString(sum[:]) {
			return nil, fmt.Errorf("%s does not match its checksum (edited or corrupt)", stateFile)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v", stateFile, err)
	}
	switch {
	case st.Version < 1:
		return nil, fmt.Errorf("%s gives no checkpoint format (a version from 1 to %d): not a sagefit checkpoint's", stateFile, Version)
	case st.Version > Version:
		return nil, fmt.Errorf("checkpoint format %d, want 1 to %d (a newer sagefit's?)", st.Version, Version)
	}
	if st.Fingerprint != fingerprint {
		return nil, fmt.Errorf("it was written for another model (fingerprint %.8s…, this model %.8s…)", st.Fingerprint, fingerprint)
	}
	if st.Epoch < 1 || st.Step < 0 || st.Steps < 0 || (st.Steps > 0 && st.Step > st.Steps) || st.GlobalStep < 0 {
		return nil, fmt.Errorf("%s says epoch %d, step %d of %d: not a place in training", stateFile, st.Epoch, st.Step, st.Steps)
	}
	vars, err := readBlob(filepath.Join(path, varsFile), st.VariablesLen, st.VariablesSHA)
	if err != nil {
		return nil, err
	}
	var best []byte
	if st.BestSHA != "" {
		if best, err = readBlob(filepath.Join(path, bestFile), st.BestLen, st.BestSHA); err != nil {
			return nil, err
		}
	}
	if st.HostsSHA != "" {
		if st.HostState, err = readBlob(filepath.Join(path, hostsFile), st.HostsLen, st.HostsSHA); err != nil {
			return nil, err
		}
	}
	hist := &report.History{}
	if len(st.History) > 0 && string(st.History) != "null" {
		if err := json.Unmarshal(st.History, hist); err != nil {
			return nil, fmt.Errorf("history: %v", err)
		}
	}
	return &Loaded{Path: path, State: st, Vars: vars, Best: best, History: hist}, nil
}

// Latest returns the newest checkpoint in dir that verifies for the model
// with this fingerprint, warning about each newer one that does not; nil
// when there is none.
func Latest(dir, fingerprint string, warn io.Writer) (*Loaded, error) {
	all, err := list(dir)
	if err != nil {
		return nil, err
	}
	for _, path := range all {
		c, err := read(path, fingerprint)
		if err == nil {
			return c, nil
		}
		fmt.Fprintf(warn, "sagefit: warning: skipping checkpoint %s: %v\n", path, err)
	}
	return nil, nil
}
