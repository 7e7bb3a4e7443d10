package sagemaker

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/sagefit/sagefit/internal/hostlist"
)

// InputMode is how SageMaker delivers a channel (TrainingInputMode).
type InputMode string

// The input modes of inputdataconfig.json.
const (
	File     InputMode = "File"     // files copied to input/data/<channel> before training starts
	Pipe     InputMode = "Pipe"     // streamed through the FIFO input/data/<channel>_<epoch>
	FastFile InputMode = "FastFile" // files under input/data/<channel>, fetched from S3 on read
)

// Distribution is how a channel's S3 objects are spread over the hosts
// (S3DistributionType).
type Distribution string

// The distribution types of inputdataconfig.json.
const (
	FullyReplicated Distribution = "FullyReplicated" // every host gets every object
	ShardedByS3Key  Distribution = "ShardedByS3Key"  // each host gets 1/N of the objects
)

// DefaultHost is the host name of a job that has no resourceconfig.json.
const DefaultHost = "algo-1"

// DefaultInstanceGroup is the instance group name of a homogeneous cluster.
const DefaultInstanceGroup = "homogeneousCluster"

// Channel is one input channel of the job.
type Channel struct {
	Name          string
	Dir           string // input/data/<name>, or SM_CHANNEL_<NAME>
	InputMode     InputMode
	Distribution  Distribution
	ContentType   string // as given to the job; empty when not given
	RecordWrapper string // RecordWrapperType: "None" or "RecordIO" (refused where the channel is read)
}

// InstanceGroup is one entry of resourceconfig.json's instance_groups.
type InstanceGroup struct {
	Name         string   `json:"instance_group_name"`
	InstanceType string   `json:"instance_type"`
	Hosts        []string `json:"hosts"`
}

// Env is the training job as SageMaker describes it to the container: the
// config files under input/config, overridden by SM_* variables where set.
type Env struct {
	Paths Paths

	Hosts       []string // in the order resourceconfig.json gives them
	CurrentHost string
	Rank        int // index of CurrentHost in Hosts; rank 0 writes the model

	// Several training processes per host (one per GPU; package
	// runtime/launch fills these in for its workers):
	// Hosts, CurrentHost and Rank then name ring members, Host is the
	// machine, LocalRank this process's index on it of LocalWorkers (1 and
	// 0 for a single process).
	Host             string
	LocalRank        int
	LocalWorkers     int
	NetworkInterface string
	InstanceType     string
	InstanceGroup    string // current_group_name
	InstanceGroups   []InstanceGroup

	Channels map[string]Channel

	// Hyperparameters holds the job's hyperparameters, each JSON-decoded
	// from its string the way the sagemaker-training toolkit does it: "10"
	// is float64(10), "true" is true, "[1,2]" is []any, and a string that
	// is not JSON, such as "adam", stays a string. Keys starting with
	// "sagemaker_" are in FrameworkParams instead.
	Hyperparameters map[string]any
	// Overrides says, one sentence each, which SM_HP_<NAME> variables
	// replaced a value hyperparameters.json gives, and which of SM_HOSTS and
	// SM_CURRENT_HOST replaced resourceconfig.json's (the job warns of them).
	Overrides       []string
	FrameworkParams map[string]any
	// unreadVariables are the SM_ environment variables sagefit does not
	// read (Warnings names them).
	unreadVariables []string

	NumGPUs int
	NumCPUs int
	JobName string // TRAINING_JOB_NAME, or "local"

	ModelDir        string // SM_MODEL_DIR, or Paths.ModelDir()
	OutputDataDir   string // SM_OUTPUT_DATA_DIR, or Paths.OutputDataDir()
	CheckpointDir   string // checkpointconfig.json's LocalPath, or Paths.DefaultCheckpointDir()
	CheckpointS3URI string // checkpointconfig.json's S3Uri; empty without checkpoint config
	// TensorBoardDir is tensorboardoutputconfig.json's LocalPath, or
	// Paths.TensorBoardDir(); TensorBoardOutput says the job has that
	// file (a TensorBoardOutputConfig: SageMaker uploads the folder).
	TensorBoardDir    string
	TensorBoardOutput bool
	// debugHook says what debughookconfig.json asks SageMaker Debugger's
	// hook to save, which sagefit does not (Warnings names it); empty for
	// the SDK's default, an S3 path alone.
	debugHook string

	// raw holds each hyperparameter (and framework setting) as it was
	// given, before decoding, for error messages.
	raw map[string]string
}

type resourceConfig struct {
	CurrentHost          string          `json:"current_host"`
	CurrentInstanceType  string          `json:"current_instance_type"`
	CurrentGroupName     string          `json:"current_group_name"`
	Hosts                []string        `json:"hosts"`
	InstanceGroups       []InstanceGroup `json:"instance_groups"`
	NetworkInterfaceName string          `json:"network_interface_name"`
}

// channelConfig is one channel of inputdataconfig.json; fields in sorted
// order, as the toolkit writes SM_INPUT_DATA_CONFIG.
type channelConfig struct {
	ContentType        string `json:"ContentType,omitempty"`
	RecordWrapperType  string `json:"RecordWrapperType"`
	S3DistributionType string `json:"S3DistributionType"`
	TrainingInputMode  string `json:"TrainingInputMode"`
}

type checkpointConfig struct {
	LocalPath string `json:"LocalPath"`
	S3URI     string `json:"S3Uri"`
}

type tensorBoardConfig struct {
	LocalPath    string `json:"LocalPath"`
	S3OutputPath string `json:"S3OutputPath"`
}

// debugHookConfig is what of a DebugHookConfig says it asks for more than
// the SageMaker Python SDK's default (an S3 path alone).
type debugHookConfig struct {
	HookParameters           map[string]string `json:"HookParameters"`
	CollectionConfigurations []struct {
		CollectionName string `json:"CollectionName"`
	} `json:"CollectionConfigurations"`
}

// Load reads the training contract under base (DefaultBase(environ) when
// base is empty) and the SM_* variables in environ, which win over the
// files. environ holds "KEY=value" strings, as [os.Environ] returns.
//
// Missing files are not errors: without resourceconfig.json the job has the
// single host "algo-1", without hyperparameters.json no hyperparameters, and
// every folder under input/data is a File mode channel whether
// inputdataconfig.json names it or not. A file that is not valid JSON, or
// has the wrong shape, is a [*ConfigError].
//
// The variables: SM_HOSTS (a JSON list) and SM_CURRENT_HOST replace the
// hosts; SM_CHANNELS (a JSON list) replaces the set of channel names, and
// SM_CHANNEL_<NAME> sets the folder of channel <name> (adding it if need
// be); SM_HP_<NAME> sets hyperparameter <name>, decoded like the file's
// values. <NAME> matches a known name in any case, else it stands for the
// name in lower case. SM_MODEL_DIR, SM_OUTPUT_DATA_DIR, SM_NUM_GPUS,
// SM_NUM_CPUS and TRAINING_JOB_NAME set the fields of the same meaning.
// Without SM_NUM_GPUS the GPUs are counted: /dev/nvidia0, /dev/nvidia1, ...,
// else the lines of `nvidia-smi -L`.
func Load(base string, environ []string) (*Env, error) {
	if base == "" {
		base = DefaultBase(environ)
	}
	e := &Env{
		Paths:           Paths{Base: base},
		Hyperparameters: map[string]any{},
		FrameworkParams: map[string]any{},
		raw:             map[string]string{},
		JobName:         "local",
	}
	steps := []func([]string) error{e.loadHosts, e.loadHyperparameters, e.loadChannels, e.loadDirs, e.loadTensorBoard, e.loadDebugHook, e.loadMachine}
	for _, step := range steps {
		if err := step(environ); err != nil {
			return nil, err
		}
	}
	e.Host, e.LocalWorkers = e.CurrentHost, 1
	e.unreadVariables = unreadSM(environ)
	return e, nil
}

func (e *Env) loadHosts(environ []string) error {
	var rc resourceConfig
	found, err := readConfig(e.Paths, ResourceConfigFile, &rc)
	if err != nil {
		return err
	}
	source := configName(ResourceConfigFile)
	if !found {
		rc = resourceConfig{CurrentHost: DefaultHost, Hosts: []string{DefaultHost}}
		source = "the default host list"
	} else if len(rc.Hosts) == 0 {
		return &ConfigError{Source: source, Msg: "lists no hosts"}
	}
	knowsCurrent := true
	fileHosts, fileCurrent := rc.Hosts, rc.CurrentHost
	if v, ok := LookupEnv(environ, "SM_HOSTS"); ok {
		knowsCurrent = found
		rc.Hosts = nil
		if err := decodeJSON("SM_HOSTS", []byte(v), &rc.Hosts); err != nil {
			return err
		}
		if len(rc.Hosts) == 0 {
			return &ConfigError{Source: "SM_HOSTS", Msg: "lists no hosts"}
		}
		source = "SM_HOSTS"
		if found && !slices.Equal(rc.Hosts, fileHosts) {
			e.Overrides = append(e.Overrides, fmt.Sprintf("environment variable SM_HOSTS=%s overrides %s's hosts %s", v, configName(ResourceConfigFile), hostlist.Short(fileHosts)))
		}
	}
	if v, ok := LookupEnv(environ, "SM_CURRENT_HOST"); ok {
		rc.CurrentHost = v
		knowsCurrent = true
		if found && v != fileCurrent {
			e.Overrides = append(e.Overrides, fmt.Sprintf("environment variable SM_CURRENT_HOST=%s overrides %s's current_host %s", v, configName(ResourceConfigFile), fileCurrent))
		}
	}
	if !knowsCurrent {
		return &ConfigError{Source: "SM_HOSTS", Msg: "is set, but neither SM_CURRENT_HOST nor " +
			configName(ResourceConfigFile) + " says which of its hosts this is"}
	}
	for i, h := range rc.Hosts {
		if h == "" {
			return &ConfigError{Source: source, Msg: "lists an empty host name"}
		}
		// Names go into paths, log lines, SAGEFIT_HOST_ADDRS (name=addr,...)
		// and worker names (host#k).
		if i := strings.IndexFunc(h, func(r rune) bool {
			return unicode.IsControl(r) || unicode.IsSpace(r) || strings.ContainsRune(`/\=,"'#`, r)
		}); i >= 0 {
			return &ConfigError{Source: source, Msg: fmt.Sprintf("lists host name %q, which holds %q: host names are SageMaker's algo-1, algo-2, ..., without spaces, slashes, quotes, commas, equals or number signs", h, []rune(h[i:])[0])}
		}
		if slices.Contains(rc.Hosts[:i], h) {
			return &ConfigError{Source: source, Msg: fmt.Sprintf("lists host %q twice", h)}
		}
	}
	rank := slices.Index(rc.Hosts, rc.CurrentHost)
	if rank < 0 {
		if rc.CurrentHost == "" {
			return &ConfigError{Source: source, Msg: "names no current_host (which of its hosts this is)"}
		}
		return fmt.Errorf("current host %q is not in hosts %s", rc.CurrentHost, hostlist.Short(rc.Hosts))
	}
	e.Hosts, e.CurrentHost, e.Rank = rc.Hosts, rc.CurrentHost, rank
	e.NetworkInterface = cmp.Or(rc.NetworkInterfaceName, "eth0")
	e.InstanceType = cmp.Or(rc.CurrentInstanceType, "local")
	e.InstanceGroup = cmp.Or(rc.CurrentGroupName, DefaultInstanceGroup)
	e.InstanceGroups = rc.InstanceGroups
	return nil
}

func (e *Env) loadHyperparameters(environ []string) error {
	var file map[string]json.RawMessage
	found, err := readConfig(e.Paths, HyperparametersFile, &file)
	if err != nil {
		return err
	}
	if found && file == nil { // null: a list or a string is refused as "the wrong shape"
		return &ConfigError{Source: configName(HyperparametersFile), Msg: "is null; write an object of the hyperparameters, {} for none"}
	}
	for name, msg := range file {
		if string(bytes.TrimSpace(msg)) == "null" { // a string's Unmarshal takes it as ""
			return &ConfigError{Source: configName(HyperparametersFile), Msg: fmt.Sprintf("gives hyperparameter %q the value null; give it a value, or leave it out", name)}
		}
		var s string
		if json.Unmarshal(msg, &s) == nil {
			e.setHyperparameter(name, s, decodeHyperparameter(s))
			continue
		}
		// SageMaker writes only strings; the toolkit keeps anything else
		// as it was decoded from the file.
		var v any
		if err := json.Unmarshal(msg, &v); err != nil { // 1e400: Python reads inf, Go nothing
			return &ConfigError{Source: configName(HyperparametersFile), Msg: fmt.Sprintf("gives hyperparameter %q the value %s, which cannot be read: a number past float64's range?", name, compactJSON(msg)), Err: err}
		}
		e.setHyperparameter(name, compactJSON(msg), v)
	}
	setBy := map[string]string{} // hyperparameter -> the SM_HP_ variable that set it
	for _, kv := range environ {
		k, v, _ := cutEnv(kv)
		name, ok := strings.CutPrefix(k, "SM_HP_")
		if !ok || name == "" {
			continue
		}
		hp := e.knownName(name)
		old, set := e.raw[hp]
		switch differs := set && !reflect.DeepEqual(decodeHyperparameter(old), decodeHyperparameter(v)); { // the toolkit writes "0.001" for "1e-3"
		case differs && setBy[hp] != "": // two spellings of one name (SM_HP_BATCH_SIZE, SM_HP_batch_size)
			e.Overrides = append(e.Overrides, fmt.Sprintf("environment variable %s=%s overrides environment variable %s=%s", k, v, setBy[hp], old))
		case differs:
			e.Overrides = append(e.Overrides, fmt.Sprintf("environment variable %s=%s overrides hyperparameters.json's %s=%s", k, v, hp, old))
		}
		setBy[hp] = k
		e.setHyperparameter(hp, v, decodeHyperparameter(v))
	}
	sort.Strings(e.Overrides)
	return nil
}

// knownName maps the NAME of SM_HP_<NAME> back to a hyperparameter name:
// the one already known that matches it ignoring case, else NAME lowercased.
func (e *Env) knownName(upper string) string {
	lower := strings.ToLower(upper)
	if _, ok := e.raw[lower]; ok {
		return lower
	}
	for name := range e.raw {
		if strings.EqualFold(name, upper) {
			return name
		}
	}
	return lower
}

func (e *Env) setHyperparameter(name, raw string, v any) {
	e.raw[name] = raw
	if strings.HasPrefix(name, "sagemaker_") {
		e.FrameworkParams[name] = v
	} else {
		e.Hyperparameters[name] = v
	}
}

func badChannelName(name string) string {
	return fmt.Sprintf("names channel %q, which is no channel name SageMaker accepts: use 1 to 64 letters, digits, '.', '-' or '_'", name)
}

func (e *Env) loadChannels(environ []string) error {
	var file map[string]channelConfig
	if _, err := readConfig(e.Paths, InputDataConfigFile, &file); err != nil {
		return err
	}
	e.Channels = map[string]Channel{}
	for name, cc := range file {
		if CheckChannelName(name) != nil { // a path ("../../x") put its FIFO or folder outside the base
			return &ConfigError{Source: configName(InputDataConfigFile), Msg: badChannelName(name)}
		}
		ch, err := channelFrom(name, cc)
		if err != nil {
			return &ConfigError{Source: configName(InputDataConfigFile), Msg: err.Error()}
		}
		ch.Dir = e.Paths.Channel(name)
		e.Channels[name] = ch
	}
	// Channels SageMaker did not describe (or a hand-made base folder):
	// every folder under input/data, FIFOs and files left out.
	entries, _ := os.ReadDir(e.Paths.DataDir())
	for _, ent := range entries {
		name := ent.Name()
		if _, ok := e.Channels[name]; ok {
			continue
		}
		if fi, err := os.Stat(filepath.Join(e.Paths.DataDir(), name)); err == nil && fi.IsDir() {
			e.Channels[name] = defaultChannel(name, e.Paths.Channel(name))
		}
	}
	if v, ok := LookupEnv(environ, "SM_CHANNELS"); ok {
		var names []string
		if err := decodeJSON("SM_CHANNELS", []byte(v), &names); err != nil {
			return err
		}
		listed := map[string]Channel{}
		for _, name := range names {
			if CheckChannelName(name) != nil {
				return &ConfigError{Source: "SM_CHANNELS", Msg: badChannelName(name)}
			}
			ch, ok := e.Channels[name]
			if !ok {
				ch = defaultChannel(name, e.Paths.Channel(name))
			}
			listed[name] = ch
		}
		e.Channels = listed
	}
	for _, kv := range environ {
		k, dir, _ := cutEnv(kv)
		upper, ok := strings.CutPrefix(k, "SM_CHANNEL_")
		if !ok || upper == "" {
			continue
		}
		if dir == "" {
			return &ConfigError{Source: k, Msg: "is empty; give the channel's folder, or leave it out"}
		}
		name := strings.ToLower(upper)
		for known := range e.Channels {
			if strings.EqualFold(known, upper) {
				name = known
			}
		}
		ch, ok := e.Channels[name]
		if !ok {
			ch = defaultChannel(name, "")
		}
		ch.Dir = dir
		e.Channels[name] = ch
	}
	return nil
}

func defaultChannel(name, dir string) Channel {
	return Channel{Name: name, Dir: dir, InputMode: File, Distribution: FullyReplicated, RecordWrapper: "None"}
}

// channelFrom checks one entry of inputdataconfig.json.
func channelFrom(name string, cc channelConfig) (Channel, error) {
	ch := defaultChannel(name, "")
	ch.ContentType = cc.ContentType
	if cc.RecordWrapperType != "" {
		ch.RecordWrapper = cc.RecordWrapperType
	}
	switch m := InputMode(cc.TrainingInputMode); m {
	case "":
	case File, Pipe, FastFile:
		ch.InputMode = m
	default:
		return ch, fmt.Errorf("gives channel %q the TrainingInputMode %q; it must be File, Pipe or FastFile", name, m)
	}
	switch d := Distribution(cc.S3DistributionType); d {
	case "":
	case FullyReplicated, ShardedByS3Key:
		ch.Distribution = d
	default:
		return ch, fmt.Errorf("gives channel %q the S3DistributionType %q; it must be FullyReplicated or ShardedByS3Key", name, d)
	}
	return ch, nil
}

// loadDirs reads where the job writes: SM_MODEL_DIR, SM_OUTPUT_DATA_DIR
// and checkpointconfig.json's LocalPath, each an absolute path outside the
// input folder (files written among a channel's data fail the next job that
// reads it); checkpoints outside the model folder too, which the trained
// model replaces.
func (e *Env) loadDirs(environ []string) error {
	e.ModelDir = cmp.Or(lookup(environ, "SM_MODEL_DIR"), e.Paths.ModelDir())
	e.OutputDataDir = cmp.Or(lookup(environ, "SM_OUTPUT_DATA_DIR"), e.Paths.OutputDataDir())
	for _, v := range []struct{ name, dir string }{{"SM_MODEL_DIR", e.ModelDir}, {"SM_OUTPUT_DATA_DIR", e.OutputDataDir}} {
		if lookup(environ, v.name) == "" {
			continue
		}
		if err := e.writableHere(v.name, "is", v.dir, false, ""); err != nil {
			return err
		}
	}
	var cc checkpointConfig
	if _, err := readConfig(e.Paths, CheckpointConfigFile, &cc); err != nil {
		return err
	}
	e.CheckpointDir = cmp.Or(cc.LocalPath, e.Paths.DefaultCheckpointDir())
	e.CheckpointS3URI = cc.S3URI
	if cc.LocalPath != "" {
		if err := e.writableHere(configName(CheckpointConfigFile), "gives LocalPath", cc.LocalPath, true, ""); err != nil {
			return err
		}
		e.CheckpointDir = filepath.Clean(cc.LocalPath)
	}
	return nil
}

// writableHere refuses a folder the job writes to (source says it) that is
// not an absolute path, or lies in the input folder (files among a
// channel's data fail the next job that reads it), or, with notInModel, in
// the model folder (the trained model replaces what it holds at the end).
func (e *Env) writableHere(source, says, dir string, notInModel bool, hint string) error {
	if !filepath.IsAbs(dir) {
		return &ConfigError{Source: source, Msg: fmt.Sprintf("%s %q; it must be an absolute path in the container", says, dir)}
	}
	outside := []struct{ dir, what string }{{e.Paths.InputDir(), "the job's input folder %s, among its channels' data and config"}}
	if notInModel {
		outside = append([]struct{ dir, what string }{{e.ModelDir, "the model folder %s, whose files the trained model replaces"}}, outside...)
	}
	for _, f := range outside {
		if abs, _ := filepath.Abs(f.dir); within(filepath.Clean(dir), abs) {
			return &ConfigError{Source: source, Msg: fmt.Sprintf("%s %q, in "+f.what+": give a folder outside it%s", says, dir, f.dir, hint)}
		}
	}
	return nil
}

// loadTensorBoard reads tensorboardoutputconfig.json (after loadDirs: its
// LocalPath must lie outside the model folder).
func (e *Env) loadTensorBoard([]string) error {
	var tb tensorBoardConfig
	ok, err := readConfig(e.Paths, TensorBoardConfigFile, &tb)
	if err != nil {
		return err
	}
	e.TensorBoardDir, e.TensorBoardOutput = e.Paths.TensorBoardDir(), ok
	if tb.LocalPath == "" {
		return nil
	}
	if err := e.writableHere(configName(TensorBoardConfigFile), "gives LocalPath", tb.LocalPath, true, " (SageMaker's default is /opt/ml/output/tensorboard)"); err != nil {
		return err
	}
	e.TensorBoardDir = filepath.Clean(tb.LocalPath)
	return nil
}

// loadDebugHook reads debughookconfig.json, for a warning only: a file of
// a shape this reading does not expect does not fail the job.
func (e *Env) loadDebugHook([]string) error {
	var dh debugHookConfig
	if _, err := readConfig(e.Paths, DebugHookConfigFile, &dh); err != nil {
		e.debugHook = fmt.Sprintf("%v; sagefit runs no SageMaker Debugger hook (smdebug is a Python library), so it saves no tensors for Debugger", err)
		return nil
	}
	var asked []string
	for _, c := range dh.CollectionConfigurations {
		asked = append(asked, c.CollectionName)
	}
	for _, k := range slices.Sorted(maps.Keys(dh.HookParameters)) {
		asked = append(asked, k+"="+dh.HookParameters[k])
	}
	if len(asked) > 0 {
		e.debugHook = fmt.Sprintf("%s asks SageMaker Debugger's hook to save %s: sagefit runs no Debugger hook (smdebug is a Python library), so it saves no tensors and Debugger rules that read them find none; the metrics are in output/data/history.json, and as TensorBoard scalars with a TensorBoardOutputConfig",
			configName(DebugHookConfigFile), hostlist.Abbrev(asked, "collections"))
	}
	return nil
}

func (e *Env) loadMachine(environ []string) error {
	e.JobName = cmp.Or(lookup(environ, "TRAINING_JOB_NAME"), e.JobName)
	var err error
	if e.NumGPUs, err = count(environ, "SM_NUM_GPUS", detectGPUs); err != nil {
		return err
	}
	e.NumCPUs, err = count(environ, "SM_NUM_CPUS", runtime.NumCPU)
	return err
}

// count reads a non-negative integer variable, or asks detect when it is
// not set.
func count(environ []string, key string, detect func() int) (int, error) {
	v, ok := LookupEnv(environ, key)
	if !ok || v == "" {
		return detect(), nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0, &ConfigError{Source: key, Msg: fmt.Sprintf("must be a whole number of devices, got %q", v), Err: err}
	}
	return n, nil
}

// ChannelNames returns the names of the channels, sorted.
func (e *Env) ChannelNames() []string {
	return slices.Sorted(maps.Keys(e.Channels))
}
