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
// its path (`startup.first_step_seconds`, `epochs[]`).
func TestREADMEDocumentsTimingJSON(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n#### timing.json\n")
	if !ok {
		t.Fatal(`README.md has no "#### timing.json" section`)
	}
	section, _, _ = strings.Cut(section, "\n### ")
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, path string) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice || ty.Kind() == reflect.Array || ty.Kind() == reflect.Map {
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
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name // encoding/json's name for an untagged field
			}
			documented := false
			for _, n := range []string{name, path + name} {
				for _, end := range []string{"`", ".", "[]"} {
					documented = documented || strings.Contains(section, "`"+n+end)
				}
			}
			if !documented {
				t.Errorf("README.md's timing.json section does not document %s%s", path, name)
			}
			walk(f.Type, path+name+".")
		}
	}
	walk(reflect.TypeOf(fit.Timing{}), "")
}
