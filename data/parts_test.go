package data

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// writeWithNumpy runs a numpy script with the folder it writes into.
func writeWithNumpy(t *testing.T, script string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(pythonWithNumpy(t), "-c", "import os, sys, numpy as np\nd = sys.argv[1]\n"+script, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("numpy: %v\n%s", err, out)
	}
	return dir
}

// epochBytes is every batch of one epoch, tensor by tensor, end to end.
func epochBytes(t *testing.T, d *Dataset, o BatchOptions) map[string][]byte {
	t.Helper()
	it := d.Epoch(context.Background(), 0, o)
	defer it.Close()
	out := map[string][]byte{}
	for {
		b, err := it.Next(context.Background())
		if err != nil {
			if !strings.Contains(err.Error(), "EOF") {
				t.Fatal(err)
			}
			return out
		}
		for name, data := range b.Tensors {
			out[name] = append(out[name], data...)
		}
		b.Release()
	}
}

// A channel in parts (shard folders, .npz archives, the top folder beside
// subfolders), as ShardedByS3Key hands a host several objects, trains on
// the parts' rows one after another in the order S3 lists their objects
// ("p-b/x.npy" before "p/x.npy" before "q.npz"; "part-1/x.npy" before a
// top-level "x.npy"): the batches, in order and shuffled, are those of one
// file holding the numpy concatenation. Text parts of different widths are padded as the
// concatenation is. Before, every such channel was refused ("model tensor
// "x" matches several channel files").
func TestChannelOfParts(t *testing.T) {
	dir := writeWithNumpy(t, `
rng = np.random.default_rng(0)
xs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (4, 2, 5)]
ys = [np.arange(n, dtype=np.int64 if i != 1 else np.int32) + 10 * i for i, n in enumerate((4, 2, 5))]
ws = [np.asarray(w, dtype=str) for w in (["ab", "c", "", "de"], ["fghij", "k"], ["l", "mn", "o", "p", "qrs"])]
ts = [np.asarray([[f"t{i}{r}", "u" * (2 * i + r % 2)] for r in range(n)], dtype=str) for i, n in enumerate((4, 2, 5))]  # 2 per row
places = {  # where each part's arrays go: a folder ("" the top one) or an archive
    "folders": ["part-0/", "part-1/", "part-2/"],
    "archives": ["shard-0.npz", "shard-1.npz", "shard-2.npz"],
    "top_and_folders": ["part-0/", "part-1/", ""],
    "s3_order": ["p-b/", "p/", "q.npz"],
}
for name, where in places.items():
    for i, w in enumerate(where):
        arrays = dict(x=xs[i], y=ys[i], words=ws[i], tags=ts[i])
        os.makedirs(os.path.join(d, name, "" if w.endswith(".npz") else w), exist_ok=True)
        if w.endswith(".npz"):
            np.savez(os.path.join(d, name, w), **arrays)
        else:
            for k, a in arrays.items():
                np.save(os.path.join(d, name, w, k + ".npy"), a)
os.makedirs(os.path.join(d, "whole"))
np.save(os.path.join(d, "whole", "x.npy"), np.concatenate(xs))
np.save(os.path.join(d, "whole", "y.npy"), np.concatenate(ys))
np.save(os.path.join(d, "whole", "words.npy"), np.concatenate(ws))
np.save(os.path.join(d, "whole", "tags.npy"), np.concatenate(ts))
`)
	open := func(name string) *Dataset {
		d, err := OpenChannel(filepath.Join(dir, name), []string{"x", "words", "tags"}, []string{"y"}, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	whole := open("whole")
	dtypes := map[string]DType{"x": Float32, "y": Float32, "words": String, "tags": String}
	for _, layout := range []string{"folders", "archives", "top_and_folders", "s3_order"} {
		d := open(layout)
		if d.Len() != 11 {
			t.Errorf("%s: %d rows, want 11", layout, d.Len())
		}
		if n := len(d.Arrays("x")); n != 3 {
			t.Errorf("%s: x has %d arrays, want one per part", layout, n)
		}
		for _, shuffle := range []bool{false, true} {
			o := BatchOptions{BatchSize: 4, Shuffle: shuffle, Seed: 5, DTypes: dtypes}
			got, want := epochBytes(t, d, o), epochBytes(t, whole, o)
			for name := range dtypes {
				if !bytes.Equal(got[name], want[name]) {
					t.Errorf("%s, shuffle %v: %s batches differ from the concatenation's:\n%q\n%q", layout, shuffle, name, got[name], want[name])
				}
			}
		}
	}
}

// A part that lacks a tensor, or holds other examples, is refused naming
// it; a stray file beside an archive is not a part, and the channel's own
// mapping error stands, with the parts' reading beside it where one part
// maps.
func TestChannelOfPartsRefusals(t *testing.T) {
	dir := writeWithNumpy(t, `
def part(p, x_shape=(3, 2), y=True):
    os.makedirs(p)
    np.save(os.path.join(p, "x.npy"), np.zeros(x_shape, np.float32))
    if y:
        np.save(os.path.join(p, "y.npy"), np.zeros(x_shape[0], np.float32))
for i in range(3):
    part(os.path.join(d, "missing", f"part-{i}"), y=i != 1)
    if i < 2:
        part(os.path.join(d, "two", f"part-{i}"), y=i != 1)
    part(os.path.join(d, "shapes", f"part-{i}"), x_shape=(3, 2) if i != 2 else (3, 4))
os.makedirs(os.path.join(d, "stray"))
np.savez(os.path.join(d, "stray", "data.npz"), x=np.zeros((3, 2)), y=np.zeros(3))
np.save(os.path.join(d, "stray", "y.npy"), np.zeros(3))
`)
	for name, want := range map[string]string{
		"missing": `channel part part-1/: no file for model target "y" in channel files [part-1/x.npy]`,
		"shapes":  `model tensor "x": part-2/x.npy holds float32 rows of shape (4,) but part-0/x.npy holds float32 rows of shape (2,); every part needs the same examples`,
		"stray":   `model tensor "y" matches several channel files [data.npz:y.npy y.npy]`,
		// Two parts, one broken: not told that parts are read at all, it
		// was told to keep one of the files.
		"two": `model tensor "x" matches several channel files [part-0/x.npy part-1/x.npy]; keep one or set an override. Read as a channel in parts (its files in several folders or .npz archives, each part a file per tensor), it fails too: channel part part-1/: no file for model target "y"`,
	} {
		_, err := OpenChannel(filepath.Join(dir, name), []string{"x"}, []string{"y"}, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v\nwant %q", name, err, want)
		}
	}
}
