package callbacks

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// tensorBoard is keras.callbacks.TensorBoard for scalars: every epoch's
// metrics as epoch_<name> (with epoch_learning_rate) under train/, the
// validation metrics under validation/, step = the epoch (0-based), and
// after each validation evaluation_<name>_vs_iterations, step = the train
// steps so far. With an integer update_freq N, also batch_<name> every N
// train batches (step = the global batch, 1-based), and, as Keras's
// record_if does, the epoch scalars only when the train batches so far are
// a multiple of N, the evaluation ones only when the validation batches so
// far are. Event files go to the job's TensorBoard folder (SageMaker's
// TensorBoardOutputConfig's LocalPath, by default /opt/ml/output/tensorboard),
// where SageMaker uploads them from.
type tensorBoard struct {
	LogDir     string          `json:"log_dir"`
	UpdateFreq json.RawMessage `json:"update_freq"`

	every int // 0: epochs only
	// tfKeras: tf-keras's, which writes the epoch and evaluation scalars
	// at every epoch (Keras 3 only at its update_freq's batches), and the
	// learning rate only where it is a schedule's (Keras 3 always).
	tfKeras, schedule bool
	dir, host         string
	train, val        *eventFile
	trainBatches      int // global train batch, as Keras counts it
	testBatches       int // validation batches so far, all validations
	recordingTest     bool
}

func newTensorBoard(raw json.RawMessage, o Options) (callback, error) {
	t := &tensorBoard{}
	if err := decode(raw, t); err != nil {
		return nil, err
	}
	switch f := strings.TrimSpace(string(t.UpdateFreq)); f {
	case "", `"epoch"`, "null":
	default:
		n, err := fmt.Sscan(f, &t.every)
		if n != 1 || err != nil || t.every < 1 {
			return nil, fmt.Errorf("update_freq %s: want \"epoch\" or a whole number of batches", f)
		}
	}
	if !o.Writer {
		return noWrite{}, nil
	}
	t.dir, t.host = o.TensorBoardDir, o.Host
	t.tfKeras, t.schedule = o.TFKeras, o.Schedule
	if o.Log != nil && t.LogDir != "" {
		fmt.Fprintf(o.Log, "sagefit: note: TensorBoard writes scalar event files to %s (log_dir %q does not apply)\n", t.dir, t.LogDir)
	}
	return t, nil
}

func (t *tensorBoard) trainBegin() error {
	var err error
	if t.train, err = newEventFile(filepath.Join(t.dir, "train"), t.host); err != nil {
		return fmt.Errorf("TensorBoard: %w", err)
	}
	t.val = nil // opened by the first validation record
	return nil
}

// validation is the validation events file, made at its first record, as
// Keras makes its writer: a job without validation data has none (an
// empty one was written).
func (t *tensorBoard) validation() (*eventFile, error) {
	if t.val == nil {
		var err error
		if t.val, err = newEventFile(filepath.Join(t.dir, "validation"), t.host); err != nil {
			return nil, fmt.Errorf("TensorBoard: %w", err)
		}
	}
	return t.val, nil
}

// batchEvery is update_freq in batches: blocks of steps end at its
// multiples, so each record is the one a step per call writes.
func (t *tensorBoard) batchEvery() int { return t.every }

func (t *tensorBoard) batchEnd(step int, logs Logs) (bool, error) {
	t.trainBatches = step
	if t.every == 0 || step%t.every != 0 {
		return false, nil
	}
	for _, m := range logs {
		if err := t.train.scalar("batch_"+m.Name, m.Value, int64(step)); err != nil {
			return false, fmt.Errorf("TensorBoard: %w", err)
		}
	}
	return false, t.train.flush()
}

// testEnd writes evaluation_<name>_vs_iterations after a validation of
// batches batches, step = the train steps so far.
func (t *tensorBoard) testEnd(logs Logs, batches, iterations int) error {
	t.testBatches += batches
	if t.every > 0 && t.testBatches%t.every != 0 && !t.tfKeras {
		return nil
	}
	val, err := t.validation()
	if err != nil {
		return err
	}
	for _, l := range logs {
		if err := val.scalar("evaluation_"+l.Name+"_vs_iterations", l.Value, int64(iterations)); err != nil {
			return fmt.Errorf("TensorBoard: %w", err)
		}
	}
	return val.flush()
}

func (t *tensorBoard) epochEnd(epoch int, logs *Logs, m Model) (bool, error) {
	if t.every > 0 && t.trainBatches%t.every != 0 && !t.tfKeras {
		return false, nil
	}
	for _, l := range *logs {
		if l.Name == "learning_rate" {
			continue // written below, as the rate now in force
		}
		file, name := t.train, l.Name
		if v, ok := strings.CutPrefix(l.Name, "val_"); ok {
			var err error
			if file, err = t.validation(); err != nil {
				return false, err
			}
			name = v
		}
		if err := file.scalar("epoch_"+name, l.Value, int64(epoch)); err != nil {
			return false, fmt.Errorf("TensorBoard: %w", err)
		}
	}
	// Keras writes the optimizer's rate as it is at this point, after any
	// ReduceLROnPlateau earlier in the list has lowered it; tf-keras a
	// schedule's only (at the iterations so far), and ReduceLROnPlateau's
	// "lr" among the logs.
	if !t.tfKeras || t.schedule {
		lr, err := m.LearningRate()
		if err != nil {
			return false, err
		}
		if err := t.train.scalar("epoch_learning_rate", lr, int64(epoch)); err != nil {
			return false, fmt.Errorf("TensorBoard: %w", err)
		}
	}
	if err := t.train.flush(); err != nil {
		return false, err
	}
	return false, t.val.flush()
}

func (t *tensorBoard) trainEnd(Model) error {
	for _, f := range []*eventFile{t.train, t.val} {
		if err := f.close(); err != nil {
			return fmt.Errorf("TensorBoard: %w", err)
		}
	}
	return nil
}

func (t *tensorBoard) state() any                    { return struct{}{} }
func (t *tensorBoard) restore(json.RawMessage) error { return nil }

// eventFile is a TensorFlow event file: TFRecords (length, masked CRC-32C
// of the length, the record, its masked CRC-32C) of Event protocol buffers,
// named events.out.tfevents.<seconds>.<host> as TensorFlow names them.
type eventFile struct {
	f *os.File
	w *bufio.Writer
}

func newEventFile(dir, host string) (*eventFile, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if host == "" {
		host = "sagefit"
	}
	now := time.Now()
	name := fmt.Sprintf("events.out.tfevents.%d.%s.%d.v2", now.Unix(), host, os.Getpid())
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	e := &eventFile{f: f, w: bufio.NewWriter(f)}
	// The first event names the format, as every writer's does.
	var ev []byte
	ev = protowire.AppendTag(ev, 1, protowire.Fixed64Type)
	ev = protowire.AppendFixed64(ev, math.Float64bits(float64(now.UnixNano())/1e9))
	ev = protowire.AppendTag(ev, 3, protowire.BytesType)
	ev = protowire.AppendString(ev, "brain.Event:2")
	if err := e.record(ev); err != nil {
		f.Close()
		return nil, err
	}
	return e, e.flush()
}

// scalar appends an Event{wall_time, step, summary{value{tag,
// simple_value}}}.
func (e *eventFile) scalar(tag string, v float64, step int64) error {
	var val []byte
	val = protowire.AppendTag(val, 1, protowire.BytesType)
	val = protowire.AppendString(val, tag)
	val = protowire.AppendTag(val, 2, protowire.Fixed32Type)
	val = protowire.AppendFixed32(val, math.Float32bits(float32(v)))
	var sum []byte
	sum = protowire.AppendTag(sum, 1, protowire.BytesType)
	sum = protowire.AppendBytes(sum, val)
	var ev []byte
	ev = protowire.AppendTag(ev, 1, protowire.Fixed64Type)
	ev = protowire.AppendFixed64(ev, math.Float64bits(float64(time.Now().UnixNano())/1e9))
	ev = protowire.AppendTag(ev, 2, protowire.VarintType)
	ev = protowire.AppendVarint(ev, uint64(step))
	ev = protowire.AppendTag(ev, 5, protowire.BytesType)
	ev = protowire.AppendBytes(ev, sum)
	return e.record(ev)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func maskedCRC(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return (c>>15 | c<<17) + 0xa282ead8
}

func (e *eventFile) record(data []byte) error {
	var hdr [12]byte
	binary.LittleEndian.PutUint64(hdr[:8], uint64(len(data)))
	binary.LittleEndian.PutUint32(hdr[8:], maskedCRC(hdr[:8]))
	var foot [4]byte
	binary.LittleEndian.PutUint32(foot[:], maskedCRC(data))
	e.w.Write(hdr[:])
	e.w.Write(data)
	_, err := e.w.Write(foot[:])
	return err
}

// flush and close do nothing on a file never made (nil: the validation
// file of a job without validation data, a job ended before training).
func (e *eventFile) flush() error {
	if e == nil {
		return nil
	}
	return e.w.Flush()
}

func (e *eventFile) close() error {
	if e == nil {
		return nil
	}
	if err := e.w.Flush(); err != nil {
		e.f.Close()
		return err
	}
	return e.f.Close()
}
