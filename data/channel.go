package data

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"mime"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// supportedFormats is what an error about an unreadable channel file
// offers instead.
const supportedFormats = "sagefit reads .npy, .npz and text/csv (.csv) files"

// ListChannel returns the tensors a channel directory offers, sorted by
// path: each .npy file, and each member of each .npz file as
// "<dir>/data.npz/<member>.npy" (which Open accepts and MapTensors names
// by member, as it names files by base name). A channel of .csv files
// lists those files instead: CSV maps by column, not by name, so give it
// to OpenChannel (or OpenCSV), not to MapTensors.
//
// Files in direct subdirectories are included (S3 prefixes often add one
// level). Ignored: names starting with "." (dotfiles, editors' and
// SageMaker's metadata), names starting with "_" (_SUCCESS and the other
// markers Spark and Hadoop leave) and manifest files (*.manifest).
// Symlinks are followed.
//
// Any other file is an error naming it and the supported formats, as is a
// channel that mixes CSV files with .npy or .npz files: a channel holds one
// kind of data, and a stray file is more often a mistake than not. So are a
// dangling symlink and anything two or more folders down: both were
// skipped without a word, and a sample_weight.npy among them left the
// rows unweighted.
func ListChannel(dir string) ([]string, error) {
	s, err := scanChannel(dir, false)
	if err != nil {
		return nil, err
	}
	if len(s.csv) > 0 {
		return s.csv, nil
	}
	return s.entries, nil
}

// csvHasNoWeights says why a sample_weight file beside CSV does not weigh
// its rows ("give numpy files their own channel" would not either).
const csvHasNoWeights = "a CSV channel carries no sample weights (its columns are the label and the features): save the rows as .npy files, sample_weight.npy beside them"

// isWeightFile says whether a channel file holds sample weights by its name.
func isWeightFile(f string) bool { return strings.HasPrefix(baseName(f), "sample_weight") }

// channelScan is what a channel directory holds.
type channelScan struct {
	entries []string // .npy files and .npz member paths, sorted
	csv     []string // CSV files, sorted
}

// scanChannel lists a channel's data. With declaredCSV (ContentType
// text/csv) files named .txt or without an extension are CSV too, as
// SageMaker's built-in algorithms read them (Spark writes part-00000).
func scanChannel(dir string, declaredCSV bool) (channelScan, error) {
	var s channelScan
	var files []string
	if err := listFiles(dir, dir, 1, &files); err != nil {
		return s, err
	}
	sort.Strings(files)
	var numpy []string
	for _, f := range files {
		ext := strings.ToLower(filepath.Ext(f))
		switch {
		case ext == ".npy", ext == ".npz":
			if declaredCSV {
				why := "give numpy files their own channel, or drop the ContentType"
				if isWeightFile(f) {
					why = csvHasNoWeights + ", and drop the ContentType, to weigh them"
				}
				return s, fmt.Errorf("channel %s has ContentType text/csv but holds the numpy file %s; %s", dir, displayName(dir, f), why)
			}
			numpy = append(numpy, f)
		case ext == ".csv", declaredCSV && (ext == "" || ext == ".txt"):
			s.csv = append(s.csv, f)
		case ext == "":
			return s, fmt.Errorf("channel file %s has no extension; %s (files without one only with the channel's ContentType set to text/csv)", displayName(dir, f), supportedFormats)
		default:
			return s, fmt.Errorf("channel file %s: %s files are not supported; %s", displayName(dir, f), ext, supportedFormats)
		}
	}
	if len(s.csv) > 0 && len(numpy) > 0 {
		why := "keep one format per channel"
		if slices.ContainsFunc(numpy, isWeightFile) {
			why = csvHasNoWeights + ", to weigh them"
		}
		return s, fmt.Errorf("channel %s mixes CSV files %s with numpy files %s; %s",
			dir, fileList(dir, s.csv), fileList(dir, numpy), why)
	}
	for _, f := range numpy {
		if strings.EqualFold(filepath.Ext(f), ".npz") {
			members, err := listNPZ(f, displayName(dir, f))
			if err != nil {
				return s, err
			}
			s.entries = append(s.entries, members...)
		} else {
			s.entries = append(s.entries, f)
		}
	}
	sort.Strings(s.entries)
	return s, nil
}

// ignoredName says whether a channel file or folder is not data.
func ignoredName(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") ||
		strings.EqualFold(filepath.Ext(name), ".manifest")
}

// listFiles appends the files of dir and, depth deep, of its subfolders;
// errors name files relative to the channel's root, as SageMaker's users
// laid them out.
func listFiles(root, dir string, depth int, out *[]string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list channel: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if ignoredName(name) {
			continue
		}
		p := filepath.Join(dir, name)
		mode := e.Type()
		if mode&os.ModeSymlink != 0 {
			fi, err := os.Stat(p)
			if err != nil {
				target, _ := os.Readlink(p)
				var pathErr *fs.PathError
				if errors.As(err, &pathErr) {
					err = pathErr.Err
				}
				return fmt.Errorf("channel file %s is a link to %s, which cannot be read (%v)", displayName(root, p), target, err)
			}
			mode = fi.Mode().Type()
		}
		switch {
		case mode.IsDir():
			if depth > 0 {
				if err := listFiles(root, p, depth-1, out); err != nil {
					return err
				}
			} else if deeper := firstEntry(p); deeper != "" {
				return fmt.Errorf("channel file %s is two folders down; sagefit reads a channel's files and those of its direct subfolders: move it up", displayName(root, deeper))
			}
		case mode.IsRegular():
			*out = append(*out, p)
		default:
			return fmt.Errorf("channel file %s is not a regular file (%v); %s", displayName(root, p), mode, supportedFormats)
		}
	}
	return nil
}

// firstEntry is the first entry of dir that is not ignored ("" when none,
// or when dir cannot be read).
func firstEntry(dir string) string {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !ignoredName(e.Name()) {
			return filepath.Join(dir, e.Name())
		}
	}
	return ""
}

// Conventional file names that map to a model's only input or only target
// without configuration, in order of preference.
var (
	inputAliases  = []string{"train", "x", "features", "data"}
	targetAliases = []string{"labels", "y", "label", "targets", "target"}
)

// MapTensors decides which channel file feeds which model tensor and
// returns tensor name -> file path. Files are what ListChannel returns:
// .npy files and .npz members, a member named by its name in the archive
// exactly as a file is by its base name (data.npz/train.npy is "train").
// In order of precedence:
//
//   - overrides (from hyperparameters): tensor name -> file base name
//     ("train" or "train.npy") or a path (matched against the end of the
//     file paths, so "data.npz/train" picks one archive's member);
//   - a file named after the tensor, <name>.npy;
//   - with exactly one input, train.npy, x.npy, features.npy or data.npy;
//   - with exactly one target, labels.npy, y.npy, label.npy, targets.npy
//     or target.npy.
//
// A file claimed by one rule is not offered to a later rule. Files that
// feed no tensor are ignored.
func MapTensors(files []string, inputs, targets []string, overrides map[string]string) (map[string]string, error) {
	return mapTensors("", files, inputs, targets, nil, overrides)
}

// mapTensors is MapTensors naming files relative to the channel's root,
// with optional tensors (a sample weight) mapped where a file has their
// name (or an override names one) and left out otherwise.
func mapTensors(root string, files []string, inputs, targets, optional []string, overrides map[string]string) (map[string]string, error) {
	var csvFiles []string
	for _, f := range files {
		if strings.EqualFold(filepath.Ext(f), ".csv") {
			csvFiles = append(csvFiles, f)
		}
	}
	if len(csvFiles) > 0 {
		return nil, fmt.Errorf("channel files %s are CSV, which feeds a model by column (the label first), not by file name; open CSV channels with OpenChannel", fileList(root, csvFiles))
	}
	byBase := map[string][]string{}
	for _, f := range files {
		b := baseName(f)
		byBase[b] = append(byBase[b], f)
	}
	isTensor := map[string]bool{}
	for _, t := range inputs {
		isTensor[t] = true
	}
	for _, t := range targets {
		isTensor[t] = true
	}
	for _, t := range optional {
		isTensor[t] = true
	}
	// Report unknown overrides in a stable order.
	var keys []string
	for k := range overrides {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := map[string]string{}
	claimed := map[string]bool{}
	for _, k := range keys {
		if !isTensor[k] {
			return nil, fmt.Errorf("file override for %q names no model tensor; the model's inputs are %q and targets %q", k, inputs, targets)
		}
		f, err := matchOverride(root, files, byBase, overrides[k])
		if err != nil {
			return nil, fmt.Errorf("file override for %q: %w in channel files %s", k, err, fileList(root, files))
		}
		out[k] = f
		claimed[f] = true
	}
	// Exact names next, for inputs, targets and optional tensors alike, so
	// that aliases below only see files no tensor asked for by name.
	for _, t := range append(append(append([]string{}, inputs...), targets...), optional...) {
		if _, done := out[t]; done {
			continue
		}
		switch c := byBase[t]; len(c) {
		case 0:
		case 1:
			if !claimed[c[0]] {
				out[t] = c[0]
				claimed[c[0]] = true
			}
		default:
			return nil, severalFiles{fmt.Errorf("model tensor %q matches several channel files %s; keep one or set an override", t, fileList(root, c))}
		}
	}
	if err := mapAlias(root, out, claimed, byBase, inputs, inputAliases); err != nil {
		return nil, err
	}
	if err := mapAlias(root, out, claimed, byBase, targets, targetAliases); err != nil {
		return nil, err
	}
	// Overrides come from the sagefit_inputs hyperparameter (a JSON map of
	// model input or target name to file), which the runtime parses.
	for _, group := range []struct {
		role, hp string
		names    []string
	}{{"input", "sagefit_inputs", inputs}, {"target", "sagefit_inputs", targets}} {
		aliases := inputAliases
		if group.role == "target" {
			aliases = targetAliases
		}
		for _, t := range group.names {
			if _, ok := out[t]; !ok {
				// Its own file, or the only tensor's conventional one
				// (train.npy), taken by an override for another tensor.
				own := slices.Clone(byBase[t])
				if len(group.names) == 1 {
					for _, a := range aliases {
						own = append(own, byBase[a]...)
					}
				}
				for _, other := range slices.Sorted(maps.Keys(out)) {
					if f := out[other]; slices.Contains(own, f) {
						return nil, fmt.Errorf("%w %s %q: its file %s feeds %q by hyperparameter %s; name a file for %q there too (one file may feed both: {%q: %q, %q: %q})", ErrNoFile,
							group.role, t, displayName(root, f), other, group.hp, t, t, displayName(root, f), other, displayName(root, f))
					}
				}
				hint := ""
				if len(group.names) == 1 {
					hint = " or " + aliases[0] + ".npy"
				}
				return nil, fmt.Errorf("%w %s %q in channel files %s; name it %s.npy%s or set hyperparameter %s", ErrNoFile,
					group.role, t, fileList(root, files), t, hint, group.hp)
			}
		}
	}
	return out, nil
}

// mapAlias maps the only tensor of a role to its conventional file name.
func mapAlias(root string, out map[string]string, claimed map[string]bool, byBase map[string][]string, tensors, aliases []string) error {
	if len(tensors) != 1 {
		return nil
	}
	t := tensors[0]
	if _, done := out[t]; done {
		return nil
	}
	var found []string
	for _, a := range aliases {
		for _, f := range byBase[a] {
			if !claimed[f] {
				found = append(found, f)
			}
		}
	}
	switch len(found) {
	case 0:
		return nil
	case 1:
		out[t] = found[0]
		claimed[found[0]] = true
		return nil
	}
	return severalFiles{fmt.Errorf("model tensor %q could come from any of the channel files %s; rename all but one or set an override", t, fileList(root, found))}
}

func matchOverride(root string, files []string, byBase map[string][]string, want string) (string, error) {
	path := want
	// A .npz member as errors name it, data.npz:train.npy, is the path
	// data.npz/train.npy.
	if i := strings.LastIndexByte(want, ':'); i > 0 && strings.EqualFold(filepath.Ext(want[:i]), ".npz") {
		path = want[:i] + "/" + want[i+1:]
	}
	if strings.ContainsRune(path, '/') || strings.ContainsRune(path, filepath.Separator) {
		clean := filepath.Clean(path)
		var found []string
		for _, f := range files {
			fc := filepath.Clean(f)
			if fc == clean || strings.HasSuffix(fc, string(filepath.Separator)+clean) ||
				strings.HasSuffix(fc, string(filepath.Separator)+clean+".npy") {
				found = append(found, f)
			}
		}
		switch len(found) {
		case 0:
			return "", fmt.Errorf("%q matches no file", want)
		case 1:
			return found[0], nil
		}
		return "", fmt.Errorf("%q matches several files", want)
	}
	c := byBase[baseName(want)]
	switch len(c) {
	case 0:
		return "", fmt.Errorf("%q matches no file", want)
	case 1:
		return c[0], nil
	}
	return "", severalFiles{fmt.Errorf("%q matches several files %s; give a path", want, fileList(root, c))}
}

// ErrNoFile is returned (wrapped) where a model input or target has no
// file in a channel.
var ErrNoFile = errors.New("no file for model")

// severalFiles is a mapping error where a tensor matches several files:
// in a channel of parts (parts.go) each part is mapped on its own instead.
type severalFiles struct{ error }

func (e severalFiles) Unwrap() error { return e.error }

// baseName is a file's name without directory and .npy extension.
func baseName(p string) string {
	b := filepath.Base(p)
	if strings.EqualFold(filepath.Ext(b), ".npy") {
		b = b[:len(b)-4]
	}
	return b
}

// fileList formats files for an error message: [a.npy part-2/labels.npy],
// with .npz members as [data.npz:train.npy] (see displayName).
func fileList(root string, files []string) string {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = displayName(root, f)
	}
	return "[" + strings.Join(names, " ") + "]"
}

// displayName names a channel file for a person: its path relative to the
// channel's root, so two train.npy in different folders read apart (root
// "": its base name), and a .npz member as "data.npz:train.npy".
func displayName(root, f string) string {
	if dir := filepath.Dir(f); strings.EqualFold(filepath.Ext(dir), ".npz") {
		return memberName(displayName(root, dir), filepath.Base(f))
	}
	if root != "" {
		if rel, err := filepath.Rel(root, f); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	return filepath.Base(f)
}

// A ChannelOption configures OpenChannel.
type ChannelOption func(*channelOptions)

type channelOptions struct {
	contentType string
	spool       string
	optional    []string
	csvText     bool
}

// WithCSVText reads a CSV channel's feature columns as text, for a model
// whose input takes strings (StringLookup, TextVectorization, ...); the
// label column stays numeric.
func WithCSVText() ChannelOption {
	return func(o *channelOptions) { o.csvText = true }
}

// WithOptional names tensors a channel may hold (a file of that name, or
// an override) but need not: a sample weight.
func WithOptional(names ...string) ChannelOption {
	return func(o *channelOptions) { o.optional = append(o.optional, names...) }
}

// WithSpoolDir names the folder deflated .npz members are inflated into
// (the job's storage volume in SageMaker, as Pipe mode spools); default
// os.TempDir().
func WithSpoolDir(dir string) ChannelOption {
	return func(o *channelOptions) { o.spool = dir }
}

// WithContentType gives OpenChannel the channel's ContentType from
// inputdataconfig.json. "text/csv" (parameters such as label_size=1
// allowed; "csv" too) reads the channel as CSV: every file, whatever its
// name, except .npy and .npz files, which are then an error. Any other
// value, or none, decides by file name: .npy and .npz files are numpy
// data, a channel of .csv files is CSV.
func WithContentType(contentType string) ChannelOption {
	return func(o *channelOptions) { o.contentType = contentType }
}

// isCSVContentType says whether a channel's ContentType asks for CSV.
func isCSVContentType(ct string) (bool, error) {
	ct = strings.TrimSpace(ct)
	if ct == "" {
		return false, nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		if strings.EqualFold(ct, "csv") {
			return true, nil
		}
		return false, nil // decide by file name (the job warns of a ContentType it does not read: ReadsContentType)
	}
	if mt != "text/csv" && mt != "csv" {
		return false, nil
	}
	if ls, ok := params["label_size"]; ok && ls != "1" {
		return false, fmt.Errorf("ContentType %q: only label_size=1 is supported (one label column, the first)", ct)
	}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		utf8 := k == "charset" && slices.Contains([]string{"utf-8", "utf8", "us-ascii"}, strings.ToLower(params[k]))
		if k != "label_size" && !utf8 { // header=present, or Latin-1 read as UTF-8, without a word
			return false, fmt.Errorf("ContentType %q: parameter %s=%s is not read: sagefit's CSV has no header row, the label in the first column, UTF-8 text; drop it", ct, k, params[k])
		}
	}
	return true, nil
}

// IsCSV says whether a channel's ContentType asks for CSV (text/csv).
func IsCSV(ct string) bool {
	csv, err := isCSVContentType(ct)
	return csv || err != nil
}

// ReadsContentType says whether a channel's ContentType names data sagefit
// reads: CSV, numpy arrays, or bytes it tells apart by file name. Any other
// (RecordIO protobuf, images, JSON lines) is not honoured: the channel is
// still read by its files' names.
func ReadsContentType(ct string) bool {
	if csv, err := isCSVContentType(ct); csv || err != nil || strings.TrimSpace(ct) == "" {
		return true // CSV, or a CSV ContentType refused where the channel opens
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/octet-stream" || numpyMediaTypes[mt]
}

// numpyMediaTypes are the ContentTypes that name numpy data.
var numpyMediaTypes = map[string]bool{"application/x-npy": true, "application/npy": true, "application/x-npz": true, "application/x-numpy": true}

// isNumpyContentType says whether a channel's ContentType names numpy data.
func isNumpyContentType(ct string) bool {
	mt, _, err := mime.ParseMediaType(strings.TrimSpace(ct))
	return err == nil && numpyMediaTypes[mt]
}

// csvTensors maps a CSV channel onto a model: the label column feeds its
// only target, the other columns its only input.
func csvTensors(dir string, inputs, targets []string, overrides map[string]string) error {
	if len(inputs) != 1 || len(targets) != 1 {
		return fmt.Errorf("channel %s is CSV (label in the first column, features after it), which feeds a model with one input and one target; this model has inputs %q and targets %q; save the data as .npy or .npz files named after the tensors",
			dir, inputs, targets)
	}
	if len(overrides) > 0 {
		return fmt.Errorf("channel %s is CSV, whose columns map to the model's only input and target, so hyperparameter sagefit_inputs (%d file names) does not apply; remove it or use .npy files",
			dir, len(overrides))
	}
	return nil
}
