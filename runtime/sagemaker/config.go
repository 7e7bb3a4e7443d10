package sagemaker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"reflect"
	"strings"
)

// ConfigError is a configuration file or SM_* variable that cannot be used.
// Its message is one sentence that names the source, fit for the failure
// file.
type ConfigError struct {
	Source string // "input/config/hyperparameters.json", "SM_HOSTS", ...
	Msg    string // what is wrong, without the source
	Err    error  // the underlying error, if any
}

func (e *ConfigError) Error() string { return e.Source + " " + e.Msg }

func (e *ConfigError) Unwrap() error { return e.Err }

// configName is how errors name a file of the config folder: relative to
// the base, as SageMaker's documentation does.
func configName(file string) string { return path.Join("input", "config", file) }

// readConfig decodes the config file named file into v. It reports false,
// and leaves v alone, when the file does not exist.
func readConfig(p Paths, file string, v any) (bool, error) {
	data, err := os.ReadFile(p.config(file))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, &ConfigError{Source: configName(file), Msg: "cannot be read: " + err.Error(), Err: err}
	}
	if err := decodeJSON(configName(file), data, v); err != nil {
		return true, err
	}
	return true, nil
}

// decodeJSON decodes data into v and turns a failure into one sentence that
// says where (source, line and column) and what.
func decodeJSON(source string, data []byte, v any) error {
	err := json.Unmarshal(data, v)
	if err == nil {
		if key, ok := duplicateKey(data); ok { // Go keeps the last, without a word
			return &ConfigError{Source: source, Msg: fmt.Sprintf("gives %q twice; keep one", key)}
		}
		return nil
	}
	var syntax *json.SyntaxError
	var shape *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		msg := "is not valid JSON: " + syntax.Error()
		if syntax.Offset < int64(len(data)) { // not "unexpected end of JSON input"
			line, col := lineColumn(data, syntax.Offset)
			msg += fmt.Sprintf(" at offset %d (line %d, column %d)", syntax.Offset, line, col)
		}
		return &ConfigError{Source: source, Err: err, Msg: msg}
	case errors.As(err, &shape):
		where := "the top level"
		if shape.Field != "" {
			where = fmt.Sprintf("field %q", shape.Field)
		}
		return &ConfigError{Source: source, Err: err, Msg: fmt.Sprintf(
			"has the wrong shape: %s holds %s where %s belongs", where, jsonWord(shape.Value), typeWord(shape.Type))}
	default:
		return &ConfigError{Source: source, Err: err, Msg: "is not valid JSON: " + err.Error()}
	}
}

// lineColumn finds the 1-based line and column of the byte a JSON syntax
// error is about: the decoder's offset counts the bytes read, that one
// included.
func lineColumn(data []byte, offset int64) (line, col int) {
	i := int(min(max(offset-1, 0), int64(len(data))))
	before := data[:i]
	line = bytes.Count(before, []byte{'\n'}) + 1
	col = i - bytes.LastIndexByte(before, '\n')
	return line, col
}

// jsonWord names a JSON value kind as encoding/json reports it.
func jsonWord(kind string) string {
	switch kind {
	case "array":
		return "a list"
	case "object":
		return "an object"
	case "number":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	}
	return kind
}

// typeWord names what a Go type expects in JSON words.
func typeWord(t reflect.Type) string {
	if t == nil {
		return "something else"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "something else"
}

// lookup returns the value of key in environ, or "" (see LookupEnv).
func lookup(environ []string, key string) string {
	v, _ := LookupEnv(environ, key)
	return v
}

// LookupEnv returns the value of key in environ ("KEY=value" strings) and
// whether it is set at all. Where a key is set twice the last one wins, as
// os/exec's Cmd.Env decides: a launcher appends its overrides to the
// environment it passes on. Every lookup of sagefit's goes through here.
func LookupEnv(environ []string, key string) (string, bool) {
	for i := len(environ) - 1; i >= 0; i-- {
		k, v, ok := cutEnv(environ[i])
		if ok && k == key {
			return v, true
		}
	}
	return "", false
}

// cutEnv splits "KEY=value". On Windows a variable may start with '=', which
// belongs to the key.
func cutEnv(kv string) (key, value string, ok bool) {
	if kv == "" {
		return "", "", false
	}
	i := strings.IndexByte(kv[1:], '=')
	if i < 0 {
		return "", "", false
	}
	return kv[:i+1], kv[i+2:], true
}

// duplicateKey finds a key given twice in data's top-level object.
func duplicateKey(data []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		key, ok := t.(string)
		if err != nil || !ok {
			return "", false
		}
		if seen[key] {
			return key, true
		}
		seen[key] = true
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return "", false
		}
	}
	return "", false
}
