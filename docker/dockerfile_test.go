package docker

// A reader of the Dockerfile syntax the images use, after the Dockerfile
// reference: parser directives, comments, line continuations, exec (JSON) and
// shell forms, flags, stages, ARG and ENV with their variable substitution,
// WORKDIR. It refuses what it does not read (heredocs, unknown substitution
// forms) so that a check never passes on a misread file. (BuildKit's own
// parser, github.com/moby/buildkit/frontend/dockerfile/parser, would add a
// large module to go.mod for two files; this one is checked against
// hadolint's parser by docker/lint.sh and by the table tests below.)

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction.
type instruction struct {
	Cmd   string            // upper case: FROM, RUN, COPY, ENV, ...
	Flags map[string]string // leading --name=value flags ("--link" gives "link": ""); the last of a repeated one
	// Mounts are the values of every --mount flag of a RUN, in order.
	Mounts []string
	Rest   string   // the text after the command and its flags, lines joined
	JSON   bool     // Rest is a JSON array of strings (exec form)
	Args   []string // the JSON array, or the whitespace-separated words of Rest
	Line   int      // first line, counted from 1
}

// stage is one FROM and the instructions after it.
type stage struct {
	Index        int
	Base         string // the FROM image or stage name, ARGs substituted
	Name         string // the AS name; "" when none
	Instructions []instruction
}

type dockerfile struct {
	Path       string
	GlobalArgs map[string]string // ARGs before the first FROM: default values
	Stages     []*stage
}

// defaultPath is the PATH of the Debian and Ubuntu base images (and what
// Docker sets when an image has none).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var (
	directiveRE = regexp.MustCompile(`^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`)
	heredocRE   = regexp.MustCompile(`<<-?\s*["']?[A-Za-z_][A-Za-z0-9_]*["']?`)
)

var knownCmds = []string{"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
	"LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}

func readDockerfile(t testing.TB, file string) *dockerfile {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	df, err := parseDockerfile(file, string(src))
	if err != nil {
		t.Fatal(err)
	}
	return df
}

func parseDockerfile(name, src string) (*dockerfile, error) {
	lines := strings.Split(strings.ReplaceAll(src, "\r\n", "\n"), "\n")
	escape := byte('\\')
	// Parser directives: only at the very top, before any other line.
	i := 0
	for ; i < len(lines); i++ {
		m := directiveRE.FindStringSubmatch(lines[i])
		if m == nil {
			break
		}
		if strings.EqualFold(m[1], "escape") {
			if m[2] != "\\" && m[2] != "`" {
				return nil, fmt.Errorf("%s:%d: escape directive %q is not \\ or `", name, i+1, m[2])
			}
			escape = m[2][0]
		}
	}
	df := &dockerfile{Path: name, GlobalArgs: map[string]string{}}
	var cur *stage
	for i < len(lines) {
		start := i
		trimmed := strings.TrimSpace(lines[i])
		if trimmed == "" || trimmed[0] == '#' {
			i++
			continue
		}
		// Join continuation lines; comment and empty lines inside are dropped.
		var b strings.Builder
		for {
			line := strings.TrimRight(lines[i], " \t")
			i++
			cont := strings.HasSuffix(line, string(escape))
			if cont {
				line = line[:len(line)-1]
			}
			b.WriteString(line)
			if !cont {
				break
			}
			for i < len(lines) {
				t := strings.TrimSpace(lines[i])
				if t != "" && t[0] != '#' {
					break
				}
				i++
			}
			if i == len(lines) {
				break
			}
		}
		in, err := parseInstruction(b.String(), start+1)
		if err != nil {
			return nil, fmt.Errorf("%s:%w", name, err)
		}
		switch {
		case in.Cmd == "FROM":
			if len(in.Args) != 1 && (len(in.Args) != 3 || !strings.EqualFold(in.Args[1], "AS")) {
				return nil, fmt.Errorf("%s:%d: FROM %q is not `FROM image [AS name]`", name, in.Line, in.Rest)
			}
			base, err := expand(in.Args[0], func(k string) (string, bool) { v, ok := df.GlobalArgs[k]; return v, ok })
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, in.Line, err)
			}
			cur = &stage{Index: len(df.Stages), Base: base}
			if len(in.Args) == 3 {
				cur.Name = strings.ToLower(in.Args[2])
			}
			df.Stages = append(df.Stages, cur)
		case cur == nil && in.Cmd == "ARG":
			kvs, err := parseKeyValues(in)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, in.Line, err)
			}
			for _, kv := range kvs {
				if df.GlobalArgs[kv.Key], err = expand(kv.Value, func(k string) (string, bool) { v, ok := df.GlobalArgs[k]; return v, ok }); err != nil {
					return nil, fmt.Errorf("%s:%d: %w", name, in.Line, err)
				}
			}
		case cur == nil:
			return nil, fmt.Errorf("%s:%d: %s before the first FROM", name, in.Line, in.Cmd)
		default:
			cur.Instructions = append(cur.Instructions, in)
		}
	}
	if len(df.Stages) == 0 {
		return nil, fmt.Errorf("%s: no FROM", name)
	}
	return df, nil
}

func parseInstruction(text string, line int) (instruction, error) {
	text = strings.TrimSpace(text)
	word, rest, _ := strings.Cut(text, " ")
	if j := strings.IndexAny(word, "\t"); j >= 0 {
		word, rest = word[:j], word[j+1:]+" "+rest
	}
	in := instruction{Cmd: strings.ToUpper(word), Flags: map[string]string{}, Line: line}
	if !slices.Contains(knownCmds, in.Cmd) {
		return in, fmt.Errorf("%d: unknown instruction %q", line, word)
	}
	rest = strings.TrimSpace(rest)
	switch in.Cmd {
	case "FROM", "COPY", "ADD", "RUN", "HEALTHCHECK":
		for strings.HasPrefix(rest, "--") {
			flag, after, _ := strings.Cut(rest, " ")
			k, v, _ := strings.Cut(strings.TrimPrefix(flag, "--"), "=")
			in.Flags[strings.ToLower(k)] = v
			if strings.ToLower(k) == "mount" {
				in.Mounts = append(in.Mounts, v)
			}
			rest = strings.TrimSpace(after)
		}
	}
	in.Rest = rest
	switch in.Cmd {
	case "RUN", "COPY", "ADD":
		if heredocRE.MatchString(rest) {
			return in, fmt.Errorf("%d: %s uses a heredoc, which this reader does not handle", line, in.Cmd)
		}
	}
	switch in.Cmd {
	case "RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME":
		// As Docker does: a JSON array of strings is the exec form; anything
		// else, including invalid JSON, is the shell form.
		var arr []string
		if strings.HasPrefix(rest, "[") && json.Unmarshal([]byte(rest), &arr) == nil {
			in.JSON, in.Args = true, arr
			return in, nil
		}
	}
	in.Args = strings.Fields(rest)
	return in, nil
}

// keyValue is one name=value of ENV, ARG or LABEL; Value is as written
// (quotes and $ still in it): expand it for the value.
type keyValue struct {
	Key, Value string
	HasValue   bool // false for `ARG name` without a default
}

// parseKeyValues reads the pairs of ENV, ARG and LABEL: `k=v k2="v 2"`, or
// ENV's older `key value with spaces`.
func parseKeyValues(in instruction) ([]keyValue, error) {
	words, err := splitWords(in.Rest)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("%s has no arguments", in.Cmd)
	}
	if in.Cmd == "ENV" && !strings.Contains(words[0], "=") {
		key, value, _ := strings.Cut(in.Rest, " ")
		return []keyValue{{Key: key, Value: strings.TrimSpace(value), HasValue: true}}, nil
	}
	var out []keyValue
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok && in.Cmd != "ARG" {
			return nil, fmt.Errorf("%s %q: %q is not name=value", in.Cmd, in.Rest, w)
		}
		if k == "" {
			return nil, fmt.Errorf("%s %q: empty name", in.Cmd, in.Rest)
		}
		out = append(out, keyValue{Key: k, Value: v, HasValue: ok})
	}
	return out, nil
}

// splitWords splits at unquoted, unescaped blanks, keeping quotes and
// escapes in the words (expand removes them).
func splitWords(s string) ([]string, error) {
	var words []string
	var b strings.Builder
	var quote byte
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' && i+1 < len(s) {
				b.WriteByte(c)
				i++
				c = s[i]
			} else if c == quote {
				quote = 0
			}
			b.WriteByte(c)
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, b.String())
				b.Reset()
				inWord = false
			}
		default:
			inWord = true
			if c == '\\' && i+1 < len(s) {
				b.WriteByte(c)
				i++
				c = s[i]
			} else if c == '"' || c == '\'' {
				quote = c
			}
			b.WriteByte(c)
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote in %q", quote, s)
	}
	if inWord {
		words = append(words, b.String())
	}
	return words, nil
}

// expand removes quotes and escapes from a word and substitutes $name,
// ${name}, ${name:-word} and ${name:+word}, as Docker does in ENV, ARG,
// FROM, COPY, WORKDIR and friends. lookup reports a variable's value and
// whether it is set.
func expand(word string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	var quote byte
	for i := 0; i < len(word); i++ {
		c := word[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				b.WriteByte(c)
			}
		case c == '\\' && i+1 < len(word) && (quote == 0 || strings.IndexByte(`"\$`, word[i+1]) >= 0):
			i++
			b.WriteByte(word[i])
		case c == '"':
			if quote == '"' {
				quote = 0
			} else {
				quote = '"'
			}
		case c == '\'' && quote == 0:
			quote = '\''
		case c == '$':
			v, n, err := substitute(word[i:], lookup)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			i += n - 1
		default:
			b.WriteByte(c)
		}
	}
	if quote != 0 {
		return "", fmt.Errorf("unterminated %c quote in %q", quote, word)
	}
	return b.String(), nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*`)

// substitute reads one $... at the start of s; it returns the value and the
// number of bytes read.
func substitute(s string, lookup func(string) (string, bool)) (string, int, error) {
	if len(s) > 1 && s[1] == '{' {
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return "", 0, fmt.Errorf("unterminated ${ in %q", s)
		}
		body := s[2:end]
		name := nameRE.FindString(body)
		if name == "" {
			return "", 0, fmt.Errorf("bad substitution ${%s}", body)
		}
		val, set := lookup(name)
		switch op := body[len(name):]; {
		case op == "":
			return val, end + 1, nil
		case strings.HasPrefix(op, ":-"):
			if !set || val == "" {
				val, _ = expand(op[2:], lookup)
			}
			return val, end + 1, nil
		case strings.HasPrefix(op, ":+"):
			if set && val != "" {
				val, _ = expand(op[2:], lookup)
			}
			return val, end + 1, nil
		default:
			return "", 0, fmt.Errorf("substitution ${%s} is not read by this test's parser", body)
		}
	}
	name := nameRE.FindString(s[1:])
	if name == "" {
		return "$", 1, nil
	}
	val, _ := lookup(name)
	return val, 1 + len(name), nil
}

// stageEnv is the state of one stage at an instruction: its variables and
// working directory.
type stageEnv struct {
	Env     []string          // ENV, in order ("K=v"), on top of the base image's
	Args    map[string]string // ARGs declared in the stage
	Workdir string
}

func (e *stageEnv) lookup(k string) (string, bool) {
	for i := len(e.Env) - 1; i >= 0; i-- {
		if name, v, _ := strings.Cut(e.Env[i], "="); name == k {
			return v, true
		}
	}
	v, ok := e.Args[k]
	return v, ok
}

func (e *stageEnv) set(k, v string) {
	e.Env = slices.DeleteFunc(e.Env, func(kv string) bool { return strings.HasPrefix(kv, k+"=") })
	e.Env = append(e.Env, k+"="+v)
}

// stage returns the stage named (or numbered) ref, nil when ref is an image.
func (df *dockerfile) stage(ref string) *stage {
	for _, s := range df.Stages {
		if s.Name != "" && s.Name == strings.ToLower(ref) || fmt.Sprint(s.Index) == ref {
			return s
		}
	}
	return nil
}

// baseImage is the image stage s is built on, through the stages it
// starts from.
func (df *dockerfile) baseImage(s *stage) string {
	for seen := 0; seen <= len(df.Stages); seen++ {
		parent := df.stage(s.Base)
		if parent == nil || parent.Index >= s.Index {
			return s.Base
		}
		s = parent
	}
	return s.Base
}

// walk runs fn for each instruction of stage s with the stage's state before
// that instruction, and returns the state after the last one. A stage built
// on an earlier stage starts from that stage's state; one built on an image
// from the image's PATH (the only variable these images rely on).
func (df *dockerfile) walk(s *stage, fn func(in instruction, st *stageEnv) error) (*stageEnv, error) {
	var st *stageEnv
	if parent := df.stage(s.Base); parent != nil && parent.Index < s.Index {
		p, err := df.walk(parent, nil)
		if err != nil {
			return nil, err
		}
		st = &stageEnv{Env: slices.Clone(p.Env), Args: map[string]string{}, Workdir: p.Workdir}
	} else {
		st = &stageEnv{Env: []string{"PATH=" + defaultPath}, Args: map[string]string{}, Workdir: "/"}
	}
	for _, in := range s.Instructions {
		if fn != nil {
			if err := fn(in, st); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", df.Path, in.Line, err)
			}
		}
		switch in.Cmd {
		case "ENV", "ARG":
			kvs, err := parseKeyValues(in)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", df.Path, in.Line, err)
			}
			// Every value of one instruction sees the variables as they were
			// before it (ENV a=1 b=$a gives b the earlier a).
			values := make([]string, len(kvs))
			for i, kv := range kvs {
				if values[i], err = expand(kv.Value, st.lookup); err != nil {
					return nil, fmt.Errorf("%s:%d: %w", df.Path, in.Line, err)
				}
			}
			for i, kv := range kvs {
				switch {
				case in.Cmd == "ENV":
					st.set(kv.Key, values[i])
				case kv.HasValue:
					st.Args[kv.Key] = values[i]
				default:
					st.Args[kv.Key] = df.GlobalArgs[kv.Key]
				}
			}
		case "WORKDIR":
			dir, err := expand(in.Rest, st.lookup)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", df.Path, in.Line, err)
			}
			if !path.IsAbs(dir) {
				dir = path.Join(st.Workdir, dir)
			}
			st.Workdir = path.Clean(dir)
		}
	}
	return st, nil
}

// copyOp is one source of a COPY or ADD and where it lands.
type copyOp struct {
	From   string // --from (stage name or image); "" for the build context
	Src    string // as written, ARGs substituted
	Target string // absolute path in the stage: the file, or the folder a folder's contents go to
	Line   int
}

// copies lists what the COPY and ADD instructions of stage s put where.
func (df *dockerfile) copies(s *stage) ([]copyOp, error) {
	var ops []copyOp
	_, err := df.walk(s, func(in instruction, st *stageEnv) error {
		if in.Cmd != "COPY" && in.Cmd != "ADD" {
			return nil
		}
		args := in.Args
		if len(args) < 2 {
			return fmt.Errorf("%s needs a source and a destination", in.Cmd)
		}
		var words []string
		for _, a := range args {
			w, err := expand(a, st.lookup)
			if err != nil {
				return err
			}
			words = append(words, w)
		}
		srcs, dst := words[:len(words)-1], words[len(words)-1]
		dirDst := strings.HasSuffix(dst, "/") || len(srcs) > 1
		if !path.IsAbs(dst) {
			dst = path.Join(st.Workdir, dst)
		}
		dst = path.Clean(dst)
		for _, src := range srcs {
			target := dst
			if dirDst && !strings.HasSuffix(src, "/") {
				target = path.Join(dst, path.Base(src))
			}
			ops = append(ops, copyOp{From: in.Flags["from"], Src: src, Target: target, Line: in.Line})
		}
		return nil
	})
	return ops, err
}

func TestParseInstructions(t *testing.T) {
	src := "# syntax=docker/dockerfile:1\n" +
		"# escape=\\\n" +
		"ARG BASE=debian:bookworm-slim\n" +
		"FROM ${BASE} AS Build\n" +
		"# a comment\n" +
		"RUN apt-get update \\\n" +
		"# comment inside a continued line\n" +
		"\n" +
		" && echo done\n" +
		"COPY --from=other --chmod=0755 a b /dst/\n" +
		"RUN --mount=type=secret,id=x --mount=type=tmpfs,target=/t true\n" +
		"ENV A=1 B=\"two words\" C=${A}x D='$A' E=\\$A\n" +
		"ENV LEGACY value with spaces\n" +
		"WORKDIR src\n" +
		"WORKDIR ../opt\n" +
		"FROM build\n" +
		"ENV PATH=/x/bin:$PATH F=${UNSET:-dflt} G=${A:+set}\n" +
		"ENTRYPOINT [\"/bin/x\", \"y\"]\n" +
		"CMD [\"a\", ]\n"
	df, err := parseDockerfile("t", src)
	if err != nil {
		t.Fatal(err)
	}
	if len(df.Stages) != 2 || df.Stages[0].Base != "debian:bookworm-slim" || df.Stages[0].Name != "build" || df.Stages[1].Base != "build" {
		t.Fatalf("stages: %+v %+v", df.Stages[0], df.Stages[1])
	}
	s0 := df.Stages[0].Instructions
	if s0[0].Cmd != "RUN" || s0[0].Rest != "apt-get update  && echo done" || s0[0].Line != 6 {
		t.Errorf("continued RUN: %+v", s0[0])
	}
	if c := s0[1]; c.Flags["from"] != "other" || c.Flags["chmod"] != "0755" || !slices.Equal(c.Args, []string{"a", "b", "/dst/"}) {
		t.Errorf("COPY: %+v", c)
	}
	if r := s0[2]; !slices.Equal(r.Mounts, []string{"type=secret,id=x", "type=tmpfs,target=/t"}) || r.Rest != "true" {
		t.Errorf("RUN with two mounts: %+v", r)
	}
	st, err := df.walk(df.Stages[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PATH=" + defaultPath, "A=1", "B=two words", "C=x", "D=$A", "E=$A", "LEGACY=value with spaces"}
	if !slices.Equal(st.Env, want) || st.Workdir != "/opt" {
		t.Errorf("stage 0 env %q workdir %q, want %q /opt", st.Env, st.Workdir, want)
	}
	final := df.Stages[1]
	st, err = df.walk(final, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := st.lookup("PATH"); v != "/x/bin:"+defaultPath {
		t.Errorf("PATH %q", v)
	}
	if f, _ := st.lookup("F"); f != "dflt" {
		t.Errorf("F=%q", f)
	}
	if g, _ := st.lookup("G"); g != "set" {
		t.Errorf("G=%q", g)
	}
	if ep := final.Instructions[1]; !ep.JSON || !slices.Equal(ep.Args, []string{"/bin/x", "y"}) {
		t.Errorf("ENTRYPOINT exec form: %+v", ep)
	}
	if cmd := final.Instructions[2]; cmd.JSON {
		t.Errorf("CMD with invalid JSON read as exec form (Docker runs it with /bin/sh -c): %+v", cmd)
	}
	ops, err := df.copies(df.Stages[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 || ops[0].Target != "/dst/a" || ops[1].Target != "/dst/b" || ops[0].From != "other" {
		t.Errorf("copies %+v", ops)
	}
}

func TestParseRefusesWhatItCannotRead(t *testing.T) {
	for name, src := range map[string]string{
		"heredoc":          "FROM a\nRUN <<EOF\necho hi\nEOF\n",
		"before FROM":      "RUN true\nFROM a\n",
		"unknown":          "FROM a\nFROB x\n",
		"no FROM":          "# nothing\n",
		"open quote":       "FROM a\nENV A=\"x\n",
		"bad FROM":         "FROM a b c d\n",
		"pattern subst":    "FROM a\nENV A=${B%%x}\n",
		"bad escape value": "# escape=x\nFROM a\n",
	} {
		t.Run(name, func(t *testing.T) {
			df, err := parseDockerfile("t", src)
			if err == nil && len(df.Stages) > 0 {
				_, err = df.walk(df.Stages[len(df.Stages)-1], nil)
			}
			if err == nil {
				t.Errorf("read %q without an error", src)
			}
		})
	}
}

func TestParseEscapeDirective(t *testing.T) {
	df, err := parseDockerfile("t", "# escape=`\nFROM a\nRUN echo \\ `\n  more\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := df.Stages[0].Instructions[0].Rest; got != `echo \   more` {
		t.Errorf("RUN %q", got)
	}
}
