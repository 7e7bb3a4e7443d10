package sagemaker

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/sagefit/sagefit/internal/hostlist"
)

// LocalSpec describes a job for `sagefit local`: what SageMaker would have
// written under /opt/ml for it.
type LocalSpec struct {
	Hosts       []string // default ["algo-1"]
	CurrentHost string   // default Hosts[0]
	// Channels maps a channel name to the folder that holds its data;
	// input/data/<name> becomes a symbolic link to it.
	Channels map[string]string
	// Hyperparameters are raw values, written as JSON strings as SageMaker
	// writes them: "10" is read back as the number 10, "adam" as "adam".
	Hyperparameters map[string]string
	InputModes      map[string]string // channel -> File (default), Pipe or FastFile
	Distributions   map[string]string // channel -> FullyReplicated (default) or ShardedByS3Key
	ContentTypes    map[string]string // channel -> ContentType; left out when empty
	InstanceType    string            // default "local", as the SageMaker SDK's local mode
	// Log gets a line naming what an earlier run left in model/ and output/
	// and this layout removed; nil: nothing is said.
	Log io.Writer
}

// channelName is what SageMaker accepts as a channel name.
var channelName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// CheckChannelName refuses a channel name SageMaker would not accept (and
// "." or "..", which would name a folder above the channel's), in one
// sentence.
func CheckChannelName(name string) error {
	if !channelName.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("channel name %q is not valid: use 1 to 64 letters, digits, '.', '-' or '_'", name)
	}
	return nil
}

// WriteLocal lays out base as SageMaker would for spec: the three config
// files of input/config in SageMaker's shapes, a link input/data/<name> for
// each channel, and the empty folders model, output and output/data. It
// replaces config files and links from an earlier run, and removes its
// failure file (a reason that must not stand beside this run's success;
// the job itself keeps the first reason it finds, as SageMaker shows the
// first failure). SageMaker starts every job with model and output empty,
// so WriteLocal empties them in a base dir an earlier run laid out (a model
// or history left there would read as this run's, beside this run's
// failure) and refuses files there in one it did not; checkpoints stay.
func WriteLocal(base string, spec LocalSpec) error {
	p := Paths{Base: base}
	hosts := spec.Hosts
	if len(hosts) == 0 {
		hosts = []string{DefaultHost}
	}
	for i, h := range hosts {
		if h == "" || slices.Contains(hosts[:i], h) {
			return fmt.Errorf("hosts %q: host names must be distinct and not empty", hosts)
		}
	}
	current := cmp.Or(spec.CurrentHost, hosts[0])
	if !slices.Contains(hosts, current) {
		return fmt.Errorf("current host %q is not in hosts %s", current, hostlist.Short(hosts))
	}
	instanceType := cmp.Or(spec.InstanceType, "local")

	channels := map[string]channelConfig{}
	for name := range spec.Channels {
		if err := CheckChannelName(name); err != nil {
			return err
		}
		cc := channelConfig{
			ContentType:        spec.ContentTypes[name],
			TrainingInputMode:  spec.InputModes[name],
			S3DistributionType: spec.Distributions[name],
			RecordWrapperType:  "None",
		}
		ch, err := channelFrom(name, cc)
		if err != nil {
			return fmt.Errorf("local job %s", err)
		}
		cc.TrainingInputMode, cc.S3DistributionType = string(ch.InputMode), string(ch.Distribution)
		channels[name] = cc
	}
	for _, m := range []map[string]string{spec.InputModes, spec.Distributions, spec.ContentTypes} {
		for name := range m {
			if _, ok := spec.Channels[name]; !ok {
				return fmt.Errorf("channel %q has settings but no data folder", name)
			}
		}
	}
	hps := spec.Hyperparameters
	if hps == nil {
		hps = map[string]string{}
	}

	job := resolved(base)
	for _, name := range slices.Sorted(maps.Keys(spec.Channels)) {
		if dir := spec.Channels[name]; within(job, resolved(dir)) {
			return fmt.Errorf("channel %q: its folder %s holds the job's base folder %s, where the job writes its input, model and output folders among the channel's files; use a base folder outside the data", name, dir, base)
		}
	}
	if err := clearEarlierRun(p, spec.Channels, spec.Log); err != nil {
		return err
	}
	for _, dir := range []string{p.ConfigDir(), p.DataDir(), p.ModelDir(), p.OutputDataDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("local job: %w", err)
		}
	}
	files := []struct {
		name string
		v    any
	}{
		{HyperparametersFile, hps},
		{ResourceConfigFile, resourceConfig{
			CurrentHost:          current,
			CurrentInstanceType:  instanceType,
			CurrentGroupName:     DefaultInstanceGroup,
			Hosts:                hosts,
			InstanceGroups:       []InstanceGroup{{Name: DefaultInstanceGroup, InstanceType: instanceType, Hosts: hosts}},
			NetworkInterfaceName: "eth0",
		}},
		{InputDataConfigFile, channels},
	}
	for _, f := range files {
		b, err := json.MarshalIndent(f.v, "", "  ")
		if err != nil {
			return fmt.Errorf("local job: %s: %w", f.name, err)
		}
		if err := os.WriteFile(p.config(f.name), append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("local job: %w", err)
		}
	}
	// An earlier run's channel that this one does not give would still be
	// read (every folder under input/data is a channel): its link, or the
	// empty folder a container's channel was mounted on, goes.
	entries, err := os.ReadDir(p.DataDir())
	if err != nil {
		return fmt.Errorf("local job: %w", err)
	}
	for _, e := range entries {
		if _, given := spec.Channels[e.Name()]; !given {
			_ = removeLaidOut(p.Channel(e.Name())) // a folder with files in it, or a FIFO, stays
		}
	}
	for _, name := range slices.Sorted(maps.Keys(spec.Channels)) {
		if err := linkChannel(p.Channel(name), name, spec.Channels[name]); err != nil {
			return err
		}
	}
	return nil
}

// ChannelFolder is a local channel's data folder src as an absolute path
// with its links followed, or why it cannot be one (it does not exist, is
// no folder). Followed: src may be the link an earlier run laid out in the
// same base dir, which the new link replaces (it pointed at itself).
func ChannelFolder(src string) (string, error) {
	abs, err := filepath.Abs(src)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("its data folder %s does not exist", abs)
	case err != nil:
		return "", err
	case !fi.IsDir():
		return "", fmt.Errorf("%s is not a folder", abs)
	}
	return filepath.EvalSymlinks(abs)
}

// linkChannel makes link a symbolic link to the folder src, replacing a link
// that is there already.
func linkChannel(link, name, src string) error {
	abs, err := ChannelFolder(src)
	if err != nil {
		return fmt.Errorf("channel %q: %w", name, err)
	}
	if err := removeLaidOut(link); errors.Is(err, errNotLaidOut) {
		return fmt.Errorf("channel %q: %s is already there and is not a link; remove it or use another base folder", name, link)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("channel %q: %w", name, err)
	}
	if err := os.Symlink(abs, link); err != nil {
		return fmt.Errorf("channel %q: %w", name, err)
	}
	return nil
}

// errNotLaidOut: a path under input/data holds what no layout made there.
var errNotLaidOut = errors.New("not a channel's link or an empty folder")

// removeLaidOut removes what a layout made at a channel's path: its link,
// or the empty folder a container's channel was mounted on. Anything else
// (a folder with files, a FIFO) stays, with errNotLaidOut.
func removeLaidOut(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink == 0 && !fi.IsDir() {
		return errNotLaidOut
	}
	if err := os.Remove(path); err != nil {
		if fi.IsDir() {
			return errNotLaidOut // not empty
		}
		return err
	}
	return nil
}

// clearEarlierRun empties model and output of a base dir whose config an
// earlier run wrote, naming what it removed in log. It refuses to when a
// channel's folder is inside one of them (or holds one: the data would go
// with them), and when a base dir it did not lay out has files there.
func clearEarlierRun(p Paths, channels map[string]string, log io.Writer) error {
	var left []string // entries of model and output, as base-relative paths
	failure := false  // an earlier failure file, removed in any base dir
	for _, dir := range []string{p.ModelDir(), p.OutputDir()} {
		if fi, err := os.Lstat(dir); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			// Emptying it would delete files outside the base dir.
			return fmt.Errorf("%s is a link; a local job writes its results into a folder of its own there: remove the link or use another base folder", dir)
		}
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("local job: %w", err)
		}
		for _, e := range entries {
			if filepath.Join(dir, e.Name()) == p.FailureFile() {
				failure = true
				continue
			}
			left = append(left, filepath.Join(filepath.Base(dir), e.Name()))
		}
	}
	if len(left) > 0 {
		if err := removeEarlierRun(p, left, channels); err != nil {
			return err
		}
	}
	if failure {
		if err := os.Remove(p.FailureFile()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("local job: %w", err)
		}
		left = append(left, filepath.Join("output", filepath.Base(p.FailureFile())))
	}
	if log != nil && len(left) > 0 {
		fmt.Fprintf(log, "sagefit local: removed what an earlier run left in %s: %s (a job starts with model and output empty)\n", p.Base, strings.Join(left, ", "))
	}
	return nil
}

// removeEarlierRun removes left (base-relative entries of model and
// output) where an earlier local run laid out the base dir, and refuses to
// where a channel's folder overlaps model or output, or where it did not.
func removeEarlierRun(p Paths, left []string, channels map[string]string) error {
	for _, name := range slices.Sorted(maps.Keys(channels)) {
		for _, dir := range []string{p.ModelDir(), p.OutputDir()} {
			if overlaps(channels[name], dir) {
				return fmt.Errorf("channel %q: its folder %s overlaps %s, which a job starts with empty and writes its own results to; copy the data elsewhere or use another base folder", name, channels[name], dir)
			}
		}
	}
	if _, err := os.Stat(p.config(ResourceConfigFile)); err != nil {
		return fmt.Errorf("%s already holds %s and is not a base folder of an earlier local run (no %s); use an empty or new base folder", p.Base, strings.Join(left, ", "), p.config(ResourceConfigFile))
	}
	for _, rel := range left {
		if err := os.RemoveAll(filepath.Join(p.Base, rel)); err != nil {
			return fmt.Errorf("local job: empty the earlier run's %s: %w", rel, err)
		}
	}
	return nil
}

// overlaps says whether one of the folders a and b is inside the other (or
// is the other), links resolved.
func overlaps(a, b string) bool {
	ra, rb := resolved(a), resolved(b)
	return within(ra, rb) || within(rb, ra)
}

// within says whether child is parent or inside it (absolute paths).
func within(child, parent string) bool {
	rel, err := filepath.Rel(parent, child)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// resolved is path absolute with its links followed, as far as it exists.
func resolved(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	return abs
}
