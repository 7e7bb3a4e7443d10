package fit_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/runtime/fit"
)

// Every field timing.json can hold is documented in the README's
// "timing.json" section (the schema harnesses read), by its JSON name or
// its dotted path (`startup.first_step_seconds`).
func TestREADMEDocumentsTimingJSON(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, path string) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || seen[ty] {
			return
		}
		seen[ty] = true
		for i := range ty.NumField() {
			f := ty.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if f.Anonymous && name == "" {
				walk(f.Type, path)
				continue
			}
			if name == "" || name == "-" {
				continue
			}
			doc := string(readme)
			if !strings.Contains(doc, "`"+name+"`") && !strings.Contains(doc, "`"+path+name+"`") && !strings.Contains(doc, "`"+path+name+".") {
				t.Errorf("README.md does not document timing.json's %s%s", path, name)
			}
			walk(f.Type, path+name+".")
		}
	}
	walk(reflect.TypeOf(fit.Timing{}), "")
}
