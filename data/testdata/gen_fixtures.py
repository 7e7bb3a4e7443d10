#!/usr/bin/env python3
"""Write the .npy, .npz and CSV fixtures of package data and expected.json
with what numpy reads back from them.

    python gen_fixtures.py [OUTDIR]   # OUTDIR defaults to this script's folder

The Go tests read the committed copies; TestFixturesMatchNumpy reruns this
script into a temporary folder and checks that the committed files are what
this numpy writes (.npz files by member, since zip entries carry the time they
were written). Keep the output deterministic: no randomness, sorted JSON.
"""
import io
import json
import math
import os
import sys

import zipfile

import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64", "float16", "float32", "float64"]


def values_for(name):
    """12 values (shape (3, 4)) that exercise the edges of each dtype."""
    dt = np.dtype(name)
    if dt.kind == "b":
        return np.array([1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0], dtype=bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        vals = [0, 1, 2, 7, 100, info.max, info.max - 1, info.min, info.min + 1, 42, 3, 250 % (int(info.max) + 1)]
        if dt.kind == "i":
            vals[3] = -1
            vals[4] = -100
        return np.array(vals, dtype=dt)
    vals = [0.0, -0.0, 1.0, -2.5, 0.1, 1.0 / 3.0, float("inf"), float("-inf"), float("nan"),
            np.finfo(dt).max, np.finfo(dt).tiny, 65519.0 if name != "float16" else 1e-7]
    return np.array(vals, dtype=dt)


def jnum(x):
    """A JSON-safe number: NaN and infinities become strings."""
    x = x.item() if hasattr(x, "item") else x
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
    return x


def flat(a):
    return [jnum(v) for v in np.ascontiguousarray(a).reshape(-1)]


def conversions(a):
    """What numpy's astype gives for the target dtypes the Go tests check.
    Float to integer casts are left out: numpy leaves NaN/inf undefined."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _conversions(a)


def _conversions(a):
    out = {
        "float32": flat(a.astype(np.float32)),
        "float64": flat(a.astype(np.float64)),
        "float16_bits": flat(a.astype(np.float16).view(np.uint16)),
        "bool": flat(a.astype(bool)),
    }
    if a.dtype.kind in "biu":
        out["int64"] = flat(a.astype(np.int64))
        out["uint8"] = flat(a.astype(np.uint8))
        out["int32"] = flat(a.astype(np.int32))
    return out


expected = {}


def save(name, a, version=None, **kw):
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        if version is None:
            np.save(f, a, **kw)
        else:
            np.lib.format.write_array(f, a, version=version)
    return path


def describe(raw, back, convert=True):
    """The expected.json entry of the .npy bytes raw, which numpy reads as back."""
    f = io.BytesIO(raw)
    v = np.lib.format.read_magic(f)
    if v == (1, 0):
        hdr = np.lib.format.read_array_header_1_0(f)
    else:
        hdr = np.lib.format.read_array_header_2_0(f)
    e = {
        "dtype": back.dtype.name,
        "big_endian": back.dtype.byteorder == ">",
        "fortran": hdr[1],
        "shape": list(back.shape),
        "version": list(v),
        "header_len": f.tell(),
        "values": flat(back),
    }
    if convert:
        e["as"] = conversions(back)
    return e


def ok(name, a, version=None, convert=True):
    path = save(name, a, version)
    with open(path, "rb") as f:
        raw = f.read()
    expected[name] = describe(raw, np.load(path), convert)


def npz(name, savez, *args, **arrays):
    """An archive written by np.savez or np.savez_compressed; every member
    is listed as "<name>/<member>.npy", the path Go's Open takes."""
    path = os.path.join(OUT, name)
    savez(path, *args, **arrays)
    back = np.load(path)
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            key = info.filename[:-len(".npy")]
            expected[name + "/" + info.filename] = describe(z.read(info), back[key])


def bad(name, error):
    expected[name] = {"error": error}


for name in DTYPES:
    base = values_for(name).reshape(3, 4)
    if np.dtype(name).itemsize == 1:
        ok(name + ".npy", base)
    else:
        ok(name + "_le.npy", base.astype(np.dtype(name).newbyteorder("<")))
        ok(name + "_be.npy", base.astype(np.dtype(name).newbyteorder(">")))

ok("fortran_2d.npy", np.asfortranarray((np.arange(12, dtype=np.float32) * 1.5).reshape(3, 4)))
ok("fortran_3d_be.npy", np.asfortranarray(np.arange(24, dtype=">i2").reshape(2, 3, 4) - 12))
ok("fortran_4d.npy", np.asfortranarray(np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)))
ok("scalar.npy", np.array(3.25, dtype=np.float64))
ok("empty.npy", np.zeros((0, 10), dtype=np.float32))
ok("vector.npy", np.arange(5, dtype=np.int64))
ok("v2.npy", np.arange(6, dtype=np.int32).reshape(2, 3), version=(2, 0))
ok("v3.npy", np.array([1.5, -2.0, 4.25, 8.0], dtype=np.float32), version=(3, 0))

save("object.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
bad("object.npy", "object.npy: dtype object ('|O') holds pickled Python objects, which sagefit never unpickles")
save("structured.npy", np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]))
bad("structured.npy", "structured.npy: structured dtypes (record arrays) are not supported")
save("complex.npy", np.zeros(2, dtype=np.complex64))
bad("complex.npy", "complex.npy: dtype complex ('<c8') is not supported")

path = save("truncated.npy", np.zeros((100, 10), dtype=np.float32))
with open(path, "rb+") as f:
    f.truncate(os.path.getsize(path) - 100)
bad("truncated.npy", "truncated.npy: file is truncated: header says shape (100, 10) float32 = 4000 bytes of data but only 3900 follow")

with open(os.path.join(OUT, "bad_magic.npy"), "wb") as f:
    f.write(b"x,y\n1,2\n")
bad("bad_magic.npy", "bad_magic.npy: not a .npy file (bad magic)")

# .npz archives: stored members (np.savez) are mapped in place, deflated ones
# (np.savez_compressed) decompressed; the same arrays in both, one of them
# big-endian and Fortran-ordered.
rows = np.arange(5 * 3, dtype=np.float32).reshape(5, 3) * 0.5 - 2
ids = np.array([3, -1, 0, 7, 2**40], dtype=np.int64)
cube = np.asfortranarray(np.arange(5 * 2 * 2, dtype=">f8").reshape(5, 2, 2) / 4)
npz("savez.npz", np.savez, train=rows, labels=ids, cube=cube)
npz("savez_compressed.npz", np.savez_compressed, train=rows, labels=ids, cube=cube)
# Positional arrays are named arr_0, arr_1, ...
npz("positional.npz", np.savez, np.arange(4, dtype=np.uint8), np.ones((4, 2), dtype=np.float16))
# Members named after a model's tensors, as a channel of one archive.
npz("tensors.npz", np.savez_compressed, a=rows, b=rows[:, :2].astype(np.float64), price=ids.astype(np.float32))

# CSV as SageMaker's built-in algorithms take it: no header, the label first.
# Two files of one channel, in two number formats; numpy's loadtxt says what
# they hold.
csv_expected = {}
os.makedirs(os.path.join(OUT, "csv"), exist_ok=True)
for name, data, fmt in [
    ("csv/part-a.csv", np.array([[1, 0.5, -2, 3.25], [0, 1e-3, 4, -0.125], [1, 7, 8, 9]], dtype=np.float64), "%.18e"),
    ("csv/part-b.csv", np.array([[0, 1.5, 2.5, -3.5], [1, 100, 200, 1e6]], dtype=np.float64), "%g"),
]:
    path = os.path.join(OUT, name)
    np.savetxt(path, data, fmt=fmt, delimiter=",")
    back = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    csv_expected[name] = {"label": flat(back[:, 0]), "features": flat(back[:, 1:]),
                          "shape": list(back[:, 1:].shape)}

# One line per file keeps the JSON readable and its diffs small.
with open(os.path.join(OUT, "expected.json"), "w") as f:
    f.write('{"numpy": %s, "files": {\n' % json.dumps(np.__version__))
    f.write(",\n".join("%s: %s" % (json.dumps(k), json.dumps(expected[k], sort_keys=True))
                       for k in sorted(expected)))
    f.write('\n}, "csv": {\n')
    f.write(",\n".join("%s: %s" % (json.dumps(k), json.dumps(csv_expected[k], sort_keys=True))
                       for k in sorted(csv_expected)))
    f.write("\n}}\n")
