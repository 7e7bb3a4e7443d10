package data

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ListChannel returns the .npy files of a channel directory, sorted by
// their path relative to dir. Files in direct subdirectories are included
// (S3 prefixes often add one level); dotfiles and dot-directories (such as
// SageMaker's or an editor's metadata) are ignored. Symlinks are followed.
func ListChannel(dir string) ([]string, error) {
	var files []string
	if err := listNPY(dir, 1, &files); err != nil {
		return nil, err
	}
	sort.Strings(files)
	return files, nil
}

func listNPY(dir string, depth int, out *[]string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list channel: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		p := filepath.Join(dir, name)
		isDir := e.IsDir()
		if e.Type()&os.ModeSymlink != 0 {
			fi, err := os.Stat(p)
			if err != nil {
				continue // a dangling link is not data
			}
			isDir = fi.IsDir()
		}
		switch {
		case isDir:
			if depth > 0 {
				if err := listNPY(p, depth-1, out); err != nil {
					return err
				}
			}
		case strings.EqualFold(filepath.Ext(name), ".npy"):
			*out = append(*out, p)
		}
	}
	return nil
}

// Conventional file names that map to a model's only input or only target
// without configuration, in order of preference.
var (
	inputAliases  = []string{"train", "x", "features", "data"}
	targetAliases = []string{"labels", "y", "label", "targets", "target"}
)

// MapTensors decides which channel file feeds which model tensor and
// returns tensor name -> file path. In order of precedence:
//
//   - overrides (from hyperparameters): tensor name -> file base name
//     ("train" or "train.npy") or a path (matched against the end of the
//     file paths);
//   - a file named after the tensor, <name>.npy;
//   - with exactly one input, train.npy, x.npy, features.npy or data.npy;
//   - with exactly one target, labels.npy, y.npy, label.npy, targets.npy
//     or target.npy.
//
// A file claimed by one rule is not offered to a later rule. Files that
// feed no tensor are ignored.
func MapTensors(files []string, inputs, targets []string, overrides map[string]string) (map[string]string, error) {
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
		f, err := matchOverride(files, byBase, overrides[k])
		if err != nil {
			return nil, fmt.Errorf("file override for %q: %v in channel files %s", k, err, fileList(files))
		}
		out[k] = f
		claimed[f] = true
	}
	// Exact names next, for inputs and targets alike, so that aliases
	// below only see files no tensor asked for by name.
	for _, t := range append(append([]string{}, inputs...), targets...) {
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
			return nil, fmt.Errorf("model tensor %q matches several channel files %s; keep one or set an override", t, fileList(c))
		}
	}
	if err := mapAlias(out, claimed, byBase, inputs, inputAliases); err != nil {
		return nil, err
	}
	if err := mapAlias(out, claimed, byBase, targets, targetAliases); err != nil {
		return nil, err
	}
	// Overrides come from the sagefit_inputs hyperparameter (a JSON map of
	// model input or target name to file), which the runtime parses.
	for _, group := range []struct {
		role, hp string
		names    []string
	}{{"input", "sagefit_inputs", inputs}, {"target", "sagefit_inputs", targets}} {
		for _, t := range group.names {
			if _, ok := out[t]; !ok {
				hint := ""
				if len(group.names) == 1 {
					aliases := inputAliases
					if group.role == "target" {
						aliases = targetAliases
					}
					hint = " or " + aliases[0] + ".npy"
				}
				return nil, fmt.Errorf("no file for model %s %q in channel files %s; name it %s.npy%s or set hyperparameter %s",
					group.role, t, fileList(files), t, hint, group.hp)
			}
		}
	}
	return out, nil
}

// mapAlias maps the only tensor of a role to its conventional file name.
func mapAlias(out map[string]string, claimed map[string]bool, byBase map[string][]string, tensors, aliases []string) error {
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
	return fmt.Errorf("model tensor %q could come from any of the channel files %s; rename all but one or set an override", t, fileList(found))
}

func matchOverride(files []string, byBase map[string][]string, want string) (string, error) {
	if strings.ContainsRune(want, '/') || strings.ContainsRune(want, filepath.Separator) {
		clean := filepath.Clean(want)
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
	return "", fmt.Errorf("%q matches several files %s; give a path", want, fileList(c))
}

// baseName is a file's name without directory and .npy extension.
func baseName(p string) string {
	b := filepath.Base(p)
	if strings.EqualFold(filepath.Ext(b), ".npy") {
		b = b[:len(b)-4]
	}
	return b
}

// fileList formats files for an error message: [a.npy labels.npy].
func fileList(files []string) string {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = filepath.Base(f)
	}
	return "[" + strings.Join(names, " ") + "]"
}
