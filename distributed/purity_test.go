package distributed

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCoreImportsNoNetwork keeps the core pure (doc.go): none of its
// non-test files may import network, process or system-call code. The
// transport lives in package transport; tests may use sockets (the bench
// helper and the bare ring do), the package may not.
func TestCoreImportsNoNetwork(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	forbidden := func(path string) bool {
		return path == "net" || strings.HasPrefix(path, "net/") ||
			strings.HasPrefix(path, "google.golang.org/grpc") ||
			path == "os/exec" || path == "syscall"
	}
	checked := 0
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			if forbidden(path) {
				t.Errorf("%s imports %q: the core imports no network code (it belongs in package transport)", fset.Position(imp.Pos()), path)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no non-test .go files found: is the test running in the package directory?")
	}
}
