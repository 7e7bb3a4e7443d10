package sagemaker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// decodeHyperparameter decodes one hyperparameter string the way the
// sagemaker-training toolkit does (json.loads, and the string itself when
// that fails). Python's json also reads NaN and ±Infinity; so does this.
//
// A JSON object or list given as a string (the text "{\"0\": 1}": a value
// json.dumps'd once by the user and once more by the SageMaker SDK) is
// that object or list: no string hyperparameter holds one.
func decodeHyperparameter(s string) any {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err == nil {
		if inner, ok := v.(string); ok {
			var structured any
			if json.Unmarshal([]byte(inner), &structured) == nil {
				switch structured.(type) {
				case map[string]any, []any:
					return structured
				}
			}
		}
		return v
	}
	switch strings.TrimSpace(s) {
	case "NaN":
		return math.NaN()
	case "Infinity":
		return math.Inf(1)
	case "-Infinity":
		return math.Inf(-1)
	}
	return s
}

// compactJSON is valid JSON text without insignificant space, or the text
// itself when it is not valid JSON.
func compactJSON(msg []byte) string {
	var b bytes.Buffer
	if json.Compact(&b, msg) != nil {
		return string(msg)
	}
	return b.String()
}

// hyperparameter returns the decoded value of a hyperparameter and the text
// it came from.
func (e *Env) hyperparameter(name string) (v any, raw string, ok bool) {
	v, ok = e.Hyperparameters[name]
	if !ok {
		return nil, "", false
	}
	return v, e.shown(name, v), true
}

// shown is the text a hyperparameter's value v was given in, or v printed
// where a caller put another value in its place.
func (e *Env) shown(name string, v any) string {
	if raw, known := e.text(name, v); known {
		return raw
	}
	return fmt.Sprint(v)
}

// text returns the text hyperparameter name was given in, while v is still
// the value decoded from it (and not one a caller put in its place).
func (e *Env) text(name string, v any) (string, bool) {
	raw, ok := e.raw[name]
	if !ok || !reflect.DeepEqual(decodeHyperparameter(raw), v) {
		return "", false
	}
	return raw, true
}

func hpError(name, want, raw string) error {
	return fmt.Errorf("hyperparameter %q must be %s, got %q", name, want, raw)
}

// pythonLiteral matches what Python's str() of a dict or list has and
// JSON has not: quotes of ', keys that are bare numbers, True, False, None.
var pythonLiteral = regexp.MustCompile(`'|[{,]\s*-?[0-9][0-9.eE+-]*\s*:|\b(True|False|None)\b`)

// NotJSONHint says, for a hyperparameter's text that looks like a dict or
// list but is not JSON ({'0': 1}, {0: 1}), where such text comes from and
// what to give instead; "" for any other text. The SageMaker Python SDK's
// Estimator sends each value as Python's str() of it (only its framework
// estimators json.dumps them), so a dict given there arrives as Python's
// text, not JSON.
func NotJSONHint(raw string) string {
	t := strings.TrimSpace(raw)
	if t == "" || (t[0] != '{' && t[0] != '[') || json.Valid([]byte(t)) || !pythonLiteral.MatchString(t) {
		return ""
	}
	return ": that is Python's text of a dict or list, not JSON (the SageMaker Python SDK's Estimator sends str() of each value): give it as json.dumps(value)"
}

// Int returns the hyperparameter name as an int, or def when the job does
// not set it. Numbers with no fractional part are accepted in any notation
// ("10", "10.0", "1e3").
func (e *Env) Int(name string, def int) (int, error) {
	v, raw, ok := e.hyperparameter(name)
	if !ok {
		return def, nil
	}
	f, ok := number(v)
	if !ok || f != math.Trunc(f) {
		return def, hpError(name, "an integer", raw)
	}
	// Integers beyond float64's exact range: the text has every digit.
	if n, err := strconv.Atoi(strings.TrimSpace(raw)); err == nil && float64(n) == f {
		return n, nil
	}
	if f < math.MinInt64 || f >= math.MaxInt64 {
		return def, hpError(name, "an integer between -9223372036854775808 and 9223372036854775807", raw)
	}
	n := int64(f)
	if int64(int(n)) != n {
		return def, hpError(name, "an integer", raw)
	}
	return int(n), nil
}

// Float returns the hyperparameter name as a float64, or def when the job
// does not set it.
func (e *Env) Float(name string, def float64) (float64, error) {
	v, raw, ok := e.hyperparameter(name)
	if !ok {
		return def, nil
	}
	if f, ok := number(v); ok {
		return f, nil
	}
	return def, hpError(name, "a number", raw)
}

// number reads a decoded hyperparameter as a float64: a JSON number, or a
// string that holds one (a hyperparameter given as "\"0.1\"", or set by a
// caller).
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return f, err == nil
	}
	return 0, false
}

// Bool returns the hyperparameter name as a bool, or def when the job does
// not set it. true, false, 1 and 0 are accepted, and as strings also
// yes/no, on/off, t/f, y/n in any case ("True" from Python's str(True)).
func (e *Env) Bool(name string, def bool) (bool, error) {
	v, raw, ok := e.hyperparameter(name)
	if !ok {
		return def, nil
	}
	switch x := v.(type) {
	case bool:
		return x, nil
	case float64:
		if x == 0 || x == 1 {
			return x == 1, nil
		}
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "true", "t", "yes", "y", "on", "1":
			return true, nil
		case "false", "f", "no", "n", "off", "0":
			return false, nil
		}
	}
	return def, hpError(name, "true or false", raw)
}

// String returns the hyperparameter name as it was given, or def when the
// job does not set it. A value that is a JSON string is returned decoded
// ("\"10\"" gives 10); any other value is returned as its text ("0.10"
// stays "0.10").
func (e *Env) String(name, def string) string {
	v, raw, ok := e.hyperparameter(name)
	if !ok {
		return def
	}
	if s, ok := v.(string); ok {
		return s
	}
	return raw
}

// Duration returns the hyperparameter name as a time.Duration, or def
// when the job does not set it. It accepts Go durations ("90s", "1h30m")
// and numbers, which count seconds ("60", "0.5").
func (e *Env) Duration(name string, def time.Duration) (time.Duration, error) {
	v, raw, ok := e.hyperparameter(name)
	if !ok {
		return def, nil
	}
	if f, ok := number(v); ok && !math.IsNaN(f) && math.Abs(f) < math.MaxInt64/float64(time.Second) {
		return time.Duration(f * float64(time.Second)), nil
	}
	if s, ok := v.(string); ok {
		if d, err := time.ParseDuration(strings.TrimSpace(s)); err == nil {
			return d, nil
		}
	}
	return def, hpError(name, `a duration such as "90s" or a number of seconds`, raw)
}

// StringMap returns the hyperparameter name, a JSON object, as a map, or
// def when the job does not set it. Values that are not strings are given
// as their JSON text ({"layers": 3} gives "layers": "3").
func (e *Env) StringMap(name string, def map[string]string) (map[string]string, error) {
	v, raw, ok := e.hyperparameter(name)
	if !ok {
		return def, nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return def, fmt.Errorf("%w%s", hpError(name, "a JSON object", raw), NotJSONHint(raw))
	}
	m := make(map[string]string, len(obj))
	for k, x := range obj {
		if s, ok := x.(string); ok {
			m[k] = s
			continue
		}
		b, err := json.Marshal(x)
		if err != nil {
			return def, hpError(name, "a JSON object", raw)
		}
		m[k] = string(b)
	}
	return m, nil
}
