package sagemaker

import (
	"reflect"
	"testing"
	"time"
)

// loadHPs loads a job whose hyperparameters.json holds hps.
func loadHPs(t *testing.T, hps string, environ ...string) *Env {
	t.Helper()
	base := t.TempDir()
	writeFiles(t, base, map[string]string{"input/config/hyperparameters.json": hps})
	e, err := Load(base, append(environ, noGPUs...))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestTypedHyperparameters(t *testing.T) {
	e := loadHPs(t, `{
  "epochs": "10",
  "epochs_float": "10.0",
  "epochs_exp": "1e3",
  "epochs_quoted": "\"12\"",
  "big": "9007199254740993",
  "huge": "9223372036854775807",
  "huger": "9223372036854775808",
  "ten": "ten",
  "half": "2.5",
  "lr": "0.001",
  "lr_text": "0.10",
  "flag_true": "true",
  "flag_True": "True",
  "flag_one": "1",
  "flag_zero": "0",
  "flag_no": "no",
  "flag_two": "2",
  "timeout_s": "60s",
  "timeout_n": "90",
  "timeout_frac": "0.5",
  "timeout_hm": "\"1h30m\"",
  "timeout_bad": "soon",
  "labels": "{\"a\": \"x\", \"b\": 2, \"c\": [1]}",
  "labels_twice": "\"{\\\"a\\\": \\\"x\\\"}\"",
  "brace_text": "\"{not json\"",
  "list": "[1, 2]",
  "optimizer": "adam",
  "empty": ""
}`, "SM_HP_BATCH_SIZE=32")

	intCases := []struct {
		name    string
		def     int
		want    int
		wantErr string
	}{
		{"epochs", 1, 10, ""},
		{"epochs_float", 1, 10, ""},
		{"epochs_exp", 1, 1000, ""},
		{"epochs_quoted", 1, 12, ""},
		{"big", 1, 9007199254740993, ""},
		{"batch_size", 1, 32, ""},
		{"missing", 7, 7, ""},
		{"ten", 1, 1, `hyperparameter "ten" must be an integer, got "ten"`},
		{"half", 1, 1, `hyperparameter "half" must be an integer, got "2.5"`},
		{"flag_true", 1, 1, `hyperparameter "flag_true" must be an integer, got "true"`},
		{"list", 1, 1, `hyperparameter "list" must be an integer, got "[1, 2]"`},
		{"empty", 1, 1, `hyperparameter "empty" must be an integer, got ""`},
		{"huge", 1, 9223372036854775807, ""},
		{"huger", 1, 1, `hyperparameter "huger" must be an integer between -9223372036854775808 and 9223372036854775807, got "9223372036854775808"`}, // it is an integer: say the bound
	}
	for _, tt := range intCases {
		got, err := e.Int(tt.name, tt.def)
		checkTyped(t, "Int", tt.name, got, tt.want, err, tt.wantErr)
	}

	floatCases := []struct {
		name    string
		def     float64
		want    float64
		wantErr string
	}{
		{"lr", 0.1, 0.001, ""},
		{"epochs", 0, 10, ""},
		{"epochs_quoted", 0, 12, ""},
		{"missing", 0.5, 0.5, ""},
		{"optimizer", 0.5, 0.5, `hyperparameter "optimizer" must be a number, got "adam"`},
		{"flag_true", 0.5, 0.5, `hyperparameter "flag_true" must be a number, got "true"`},
	}
	for _, tt := range floatCases {
		got, err := e.Float(tt.name, tt.def)
		checkTyped(t, "Float", tt.name, got, tt.want, err, tt.wantErr)
	}

	boolCases := []struct {
		name    string
		def     bool
		want    bool
		wantErr string
	}{
		{"flag_true", false, true, ""},
		{"flag_True", false, true, ""},
		{"flag_one", false, true, ""},
		{"flag_zero", true, false, ""},
		{"flag_no", true, false, ""},
		{"missing", true, true, ""},
		{"flag_two", false, false, `hyperparameter "flag_two" must be true or false, got "2"`},
		{"optimizer", false, false, `hyperparameter "optimizer" must be true or false, got "adam"`},
	}
	for _, tt := range boolCases {
		got, err := e.Bool(tt.name, tt.def)
		checkTyped(t, "Bool", tt.name, got, tt.want, err, tt.wantErr)
	}

	durationCases := []struct {
		name    string
		def     time.Duration
		want    time.Duration
		wantErr string
	}{
		{"timeout_s", 0, 60 * time.Second, ""},
		{"timeout_n", 0, 90 * time.Second, ""},
		{"timeout_frac", 0, 500 * time.Millisecond, ""},
		{"timeout_hm", 0, 90 * time.Minute, ""},
		{"missing", time.Minute, time.Minute, ""},
		{"timeout_bad", time.Minute, time.Minute, `hyperparameter "timeout_bad" must be a duration such as "90s" or a number of seconds, got "soon"`},
	}
	for _, tt := range durationCases {
		got, err := e.Duration(tt.name, tt.def)
		checkTyped(t, "Duration", tt.name, got, tt.want, err, tt.wantErr)
	}

	stringCases := []struct{ name, def, want string }{
		{"optimizer", "sgd", "adam"},
		{"lr_text", "", "0.10"},
		{"epochs_quoted", "", "12"},
		{"list", "", "[1, 2]"},
		{"empty", "x", ""},
		{"brace_text", "", "{not json"},
		{"missing", "sgd", "sgd"},
	}
	for _, tt := range stringCases {
		if got := e.String(tt.name, tt.def); got != tt.want {
			t.Errorf("String(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}

	mapCases := []struct {
		name    string
		def     map[string]string
		want    map[string]string
		wantErr string
	}{
		{"labels", nil, map[string]string{"a": "x", "b": "2", "c": "[1]"}, ""},
		{"missing", map[string]string{"d": "1"}, map[string]string{"d": "1"}, ""},
		{"list", nil, nil, `hyperparameter "list" must be a JSON object, got "[1, 2]"`},
		// json.dumps'd by the user and again by the SageMaker SDK.
		{"labels_twice", nil, map[string]string{"a": "x"}, ""},
	}
	for _, tt := range mapCases {
		got, err := e.StringMap(tt.name, tt.def)
		checkTyped(t, "StringMap", tt.name, got, tt.want, err, tt.wantErr)
	}
}

// SM_HP_<NAME> set beside hyperparameters.json wins, and is named when it
// replaces another value (it did so without a word).
func TestEnvironmentOverridesAreNamed(t *testing.T) {
	// The same values in the toolkit's own text are no override.
	e := loadHPs(t, `{"epochs": "2", "batch_size": "32", "learning_rate": "1e-3", "class_weight": "{\"0\": 1, \"1\": 5}"}`,
		"SM_HP_EPOCHS=3", "SM_HP_BATCH_SIZE=32", "SM_HP_SEED=4", "SM_HP_LEARNING_RATE=0.001", `SM_HP_CLASS_WEIGHT={"0":1,"1":5}`)
	if n, _ := e.Int("epochs", 0); n != 3 {
		t.Errorf("epochs %d, want the environment's 3", n)
	}
	want := []string{`environment variable SM_HP_EPOCHS=3 overrides hyperparameters.json's epochs=2`}
	if !reflect.DeepEqual(e.Overrides, want) {
		t.Errorf("overrides %q, want %q", e.Overrides, want)
	}
	// Two spellings of one name in the environment: the second overrides
	// the first, not the file (it blamed the file for the first's value).
	e = loadHPs(t, `{"batch_size": "32"}`, "SM_HP_BATCH_SIZE=8", "SM_HP_batch_size=16")
	want = []string{
		`environment variable SM_HP_BATCH_SIZE=8 overrides hyperparameters.json's batch_size=32`,
		`environment variable SM_HP_batch_size=16 overrides environment variable SM_HP_BATCH_SIZE=8`,
	}
	if !reflect.DeepEqual(e.Overrides, want) {
		t.Errorf("overrides %q, want %q", e.Overrides, want)
	}
}

func checkTyped(t *testing.T, method, name string, got, want any, err error, wantErr string) {
	t.Helper()
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("%s(%q): %v", method, name, err)
	case wantErr != "" && (err == nil || err.Error() != wantErr):
		t.Errorf("%s(%q) error = %v, want %s", method, name, err, wantErr)
	case !reflect.DeepEqual(got, want):
		t.Errorf("%s(%q) = %v, want %v", method, name, got, want)
	}
}

// A value the caller puts in place of a loaded one is read as itself.
func TestHyperparameterSetAfterLoad(t *testing.T) {
	e := loadHPs(t, `{"epochs": "10", "lr": "0.10"}`)
	e.Hyperparameters["epochs"] = 3.0
	e.Hyperparameters["lr"] = "fast"
	e.Hyperparameters["batch"] = 64.0
	if n, err := e.Int("epochs", 1); n != 3 || err != nil {
		t.Errorf("Int(epochs) = %d, %v; want 3", n, err)
	}
	if n, err := e.Int("batch", 1); n != 64 || err != nil {
		t.Errorf("Int(batch) = %d, %v; want 64", n, err)
	}
	if _, err := e.Float("lr", 0); err == nil || err.Error() != `hyperparameter "lr" must be a number, got "fast"` {
		t.Errorf("Float(lr) error = %v", err)
	}
}

// NotJSONHint speaks of Python's text only where the text has its marks
// (quotes of ', bare number keys, True/False/None), not of a JSON typo.
func TestNotJSONHint(t *testing.T) {
	for raw, hint := range map[string]bool{
		`{0: 1.0, 1: 5.0}`:    true,
		`{'a': 'b.npy'}`:      true,
		`['train', 'labels']`: true,
		`[1, None]`:           true,
		`{"0": 1,}`:           false,
		`{"0": 1}`:            false,
		`3`:                   false,
	} {
		if got := NotJSONHint(raw) != ""; got != hint {
			t.Errorf("NotJSONHint(%q) hints %v, want %v", raw, got, hint)
		}
	}
}

// SM_HOSTS and SM_CURRENT_HOST beside resourceconfig.json win, and are
// named where they replace its hosts (a probe found one host of a two-host
// file training alone without a word); the same values are no override.
func TestHostOverridesAreNamed(t *testing.T) {
	base := t.TempDir()
	writeFiles(t, base, map[string]string{"input/config/resourceconfig.json": `{"current_host": "algo-1", "hosts": ["algo-1", "algo-2"]}`})
	e, err := Load(base, append([]string{`SM_HOSTS=["algo-1"]`, "SM_CURRENT_HOST=algo-1"}, noGPUs...))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`environment variable SM_HOSTS=["algo-1"] overrides input/config/resourceconfig.json's hosts [algo-1 algo-2]`}
	if len(e.Hosts) != 1 || !reflect.DeepEqual(e.Overrides, want) {
		t.Errorf("hosts %v, overrides %q, want %q", e.Hosts, e.Overrides, want)
	}
	e, err = Load(base, append([]string{`SM_HOSTS=["algo-1","algo-2"]`, "SM_CURRENT_HOST=algo-2"}, noGPUs...))
	if err != nil {
		t.Fatal(err)
	}
	want = []string{`environment variable SM_CURRENT_HOST=algo-2 overrides input/config/resourceconfig.json's current_host algo-1`}
	if e.Rank != 1 || !reflect.DeepEqual(e.Overrides, want) {
		t.Errorf("rank %d, overrides %q, want %q", e.Rank, e.Overrides, want)
	}
}
