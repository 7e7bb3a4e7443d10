"""Single-host training throughput, per-step overhead and start-up: sagefit against Keras.

    python -m sagefit.bench --sagefit bin/sagefit [--steplimit .bench/tf.test] [--markdown BENCHMARKS.md]

Rows: the seed MLP (batch 32 and 256), the small CNN, an LSTM, MobileNetV2
at 32x32 and a wide, recommender-style Embedding model (a 100,000 x 32
table). Each row's model is exported once; then, in interleaved rounds (the
order of the runs turns each round), it trains on the same data, batch,
thread counts and epochs with:

- Keras ``model.fit`` as compiled by default, with ``steps_per_execution``
  (8, 32 and 128; the best is quoted), with ``jit_compile=True``, and with
  both (each K again), all in one Python process per row and round, each
  variant on a fresh model;
- ``sagefit local`` (``SAGEFIT_VARIANTS``: more sagefit columns, each with
  its own hyperparameters, can be added there or with --sagefit-variant);
- the graph's own limit (with --steplimit, the model/tf test binary):
  BenchmarkStepLimit runs the exported train_step back to back from C on
  tensors made once, BenchmarkTrainStepCall runs Model.TrainStep on one
  batch made once; sagefit's wall time per step against them is the
  runtime's overhead per step.

Throughput is examples per second over the epochs after the first (the first
holds tracing and warm-up on both sides), the median over rounds. Start-up
(--startup-families) is the time from starting the process to the end of the
first train step: Keras (``import tensorflow``, build and compile, load the
data, ``fit`` to its first batch's end) against sagefit (timing.json's
``first_step_end_unix``), both timed from this harness's clock, with
TF_CPP_MIN_LOG_LEVEL unset as a user would start them.

Prints the tables and, with --markdown, replaces the sections between the
bench, steplimit, startup and prefetch markers in that file. Raw results go
to --out (results.json).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# row -> (family, batch size, rows of data, Keras epochs, sagefit epochs).
# sagefit runs more epochs where its epochs are short, so that each run
# measures a second or more after its first epoch.
CASES = {
    "seed-32": ("seed", 32, 32768, 4, 10),
    "seed-256": ("seed", 256, 262144, 4, 8),
    "cnn": ("cnn", 32, 4096, 4, 5),
    "lstm": ("lstm", 32, 16384, 4, 6),
    "mobilenet_v2": ("mobilenet_v2", 32, 1024, 3, 3),
    "embedding": ("embedding_wide", 256, 32768, 3, 3),
}
LABELS = {
    "seed": "seed MLP",
    "cnn": "small CNN (28x28)",
    "lstm": "LSTM (6x3, 8 units)",
    "mobilenet_v2": "MobileNetV2 (32x32)",
    "embedding_wide": "Embedding 100k x 32",
}
# sagefit columns: name -> hyperparameters it trains with; the hyperparameter
# jit_compile=true instead exports the model compiled with jit_compile=True
# (how sagefit is told to train XLA-compiled).
SAGEFIT_VARIANTS = {
    "sagefit": {},
    "sagefit K=1": {"steps_per_execution": "1"},
    "sagefit XLA": {"jit_compile": "true"},
    "sagefit single-threaded": {"executor": "single_threaded"},
}
# rows whose sagefit run is repeated with prefetch off
PREFETCH_ROWS = ("seed-32", "cnn")
STEPS_PER_EXECUTION = (8, 32, 128)
STARTUP_FAMILIES = ("seed", "mobilenet_v2")

MARKERS = {
    "bench": ("<!-- bench:begin -->", "<!-- bench:end -->"),
    "steplimit": ("<!-- steplimit:begin -->", "<!-- steplimit:end -->"),
    "startup": ("<!-- startup:begin -->", "<!-- startup:end -->"),
    "prefetch": ("<!-- prefetch:begin -->", "<!-- prefetch:end -->"),
}


# ---------------------------------------------------------------- models


def embedding_wide():
    """Recommender-style: a bag of 16 item ids (of 100,000) looked up in a
    100,000 x 32 Embedding table, averaged, a small MLP head, click or not."""
    import keras

    model = keras.Sequential([
        keras.Input((16,), dtype="int32"),
        keras.layers.Embedding(100_000, 32),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def embedding_wide_data(rows, rng):
    import numpy as np

    ids = rng.integers(0, 100_000, (rows, 16)).astype(np.int32)
    y = ((ids % 7).sum(axis=1) > 48).astype(np.float32)
    return {"train": ids}, {"labels": y}


def family(name):
    """(build and compile the model, make rows of data)."""
    if name == "embedding_wide":
        return embedding_wide, embedding_wide_data
    from sagefit import testing

    return testing.FAMILIES[name]


def make_fixture(fam, out, rows, jit=False, seed=1):
    """Export fam's model (untrained; compiled with jit_compile=True when
    jit) to out/model and write rows of data to out/train as .npy
    (train.npy, labels.npy: single input and target)."""
    import keras
    import numpy as np

    import sagefit

    build, data = family(fam)
    keras.utils.set_random_seed(seed)
    model = build()
    if jit:
        model.jit_compile = True
    sagefit.export(model, os.path.join(out, "model"), overwrite=True)
    inputs, targets = data(rows, np.random.default_rng(seed))
    os.makedirs(os.path.join(out, "train"), exist_ok=True)
    for name, arr in {**inputs, **targets}.items():
        np.save(os.path.join(out, "train", name + ".npy"), arr)


def load_data(fixture):
    import numpy as np

    d = os.path.join(fixture, "train")
    return np.load(os.path.join(d, "train.npy")), np.load(os.path.join(d, "labels.npy"))


# ---------------------------------------------------------------- Keras side


def set_threads(threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def keras_worker(spec):
    """Run Keras's variants in this process, each on a fresh model from the
    same seed: default, steps_per_execution K for each K in spec["ks"] and
    jit_compile, in turn from spec["turn"]; then both, jit_compile with the
    K that was fastest without it. Returns {name: epoch seconds}."""
    import gc

    set_threads(spec["threads"])
    import keras

    x, y = load_data(spec["fixture"])
    build, _ = family(spec["family"])

    def fit(spe, jit):
        keras.backend.clear_session()
        gc.collect()
        keras.utils.set_random_seed(1)
        model = build()
        model.steps_per_execution = spe
        model.jit_compile = jit
        model.train_function = None
        times = []

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.t)

        model.fit(x, y, epochs=spec["epochs"], batch_size=spec["batch"], verbose=0, callbacks=[Timer()])
        return times

    variants = [("default", 1, False)] + [(f"spe{k}", k, False) for k in spec["ks"]] + [("jit", 1, True)]
    turn = spec["turn"] % len(variants)
    out = {}
    for name, spe, jit in variants[turn:] + variants[:turn]:
        out[name] = fit(spe, jit)
    best = max(spec["ks"], key=lambda k: steady(out[f"spe{k}"], 1))
    out["both"] = fit(best, True)
    out["both_k"] = best
    return out


def keras_startup(fam, fixture, batch, threads):
    """A user's script: import TensorFlow and Keras, build and compile the
    model, load the data, fit to the end of the first batch; prints the
    Unix time of each point and exits at the first batch's end."""
    marks = {}
    import tensorflow  # noqa: F401
    import keras

    marks["imported"] = time.time()
    set_threads(threads)
    build, _ = family(fam)
    model = build()
    marks["built"] = time.time()
    x, y = load_data(fixture)
    marks["data"] = time.time()

    class First(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks["first_step_end"] = time.time()
            print(json.dumps(marks), flush=True)
            os._exit(0)

    model.fit(x, y, epochs=1, batch_size=batch, verbose=0, callbacks=[First()])


def run_keras(spec):
    """keras_worker in a process of its own."""
    out = subprocess.run(
        [sys.executable, "-m", "sagefit.bench", "--keras-worker", json.dumps(spec)],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"Keras worker {spec['family']} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- sagefit side


def run_sagefit(binary, fixture, work, epochs, batch, threads, hps=None, env=None):
    """Train with sagefit local; return timing.json."""
    shutil.rmtree(work, ignore_errors=True)
    cmd = [
        binary, "local",
        "--model", os.path.join(fixture, "model"),
        "--channel", "training=" + os.path.join(fixture, "train"),
        "--hp", f"epochs={epochs}",
        "--hp", f"batch_size={batch}",
        "--hp", f"intra_op_threads={threads}",
        "--output", work,
    ]
    for k, v in (hps or {}).items():
        cmd += ["--hp", f"{k}={v}"]
    # The inter-op pool as big as Keras's, through TensorFlow's own
    # variable: the hyperparameter would also fix where steps run (the
    # pool always), where sagefit's default chooses.
    env = dict(env or os.environ, TF_NUM_INTEROP_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-4000:]}")
    with open(os.path.join(work, "output", "data", "timing.json")) as f:
        return json.load(f)


ARMS = ("limit", "cgo", "fresh", "call", "inline-limit", "inline-call", "single-limit", "single-call")


def run_steplimit(binary, fixture, batch, threads, steps):
    """BenchmarkStepLimit (model/tf) on fixture: per arm (limit, cgo, fresh,
    call, limit and call with every op in the calling thread, and on
    TensorFlow's single-threaded executor), the mean and median ns per
    step."""
    env = dict(os.environ,
               SAGEFIT_STEPLIMIT_MODEL=os.path.join(fixture, "model"),
               SAGEFIT_STEPLIMIT_DATA=os.path.join(fixture, "train"),
               SAGEFIT_STEPLIMIT_BATCH=str(batch),
               SAGEFIT_STEPLIMIT_THREADS=str(threads))
    binary = os.path.abspath(binary)
    out = subprocess.run(
        [binary, "-test.run", "^$", "-test.bench", "^BenchmarkStepLimit$",
         "-test.benchtime", f"{steps}x", "-test.count", "1"],
        capture_output=True, text=True, env=env, cwd=os.path.dirname(binary),
    )
    if out.returncode != 0:
        raise RuntimeError(f"step-limit benchmark failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("BenchmarkStepLimit"))
    fields = line.split()[2:]  # value unit pairs after the name and the count
    metrics = {unit: float(v) for v, unit in zip(fields[::2], fields[1::2])}
    return {arm: {"mean_ns": metrics[f"{arm}-ns/step"], "p50_ns": metrics[f"{arm}-p50-ns"]} for arm in ARMS}


# ---------------------------------------------------------------- helpers


def steady(epoch_seconds, rows):
    """Examples per second over the epochs after the first."""
    secs = sum(epoch_seconds[1:])
    return rows * len(epoch_seconds[1:]) / secs


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}"


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {msg}", file=sys.stderr, flush=True)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def startup_env():
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user starts them
    return env


# ---------------------------------------------------------------- the run


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sagefit", default="bin/sagefit")
    p.add_argument("--steplimit", help="model/tf test binary (go test -c ./model/tf)")
    p.add_argument("--markdown")
    p.add_argument("--out", default=".bench/bench", help="folder for results.json")
    p.add_argument("--rows", default=",".join(CASES), help="rows to run: " + ",".join(CASES))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--spe", default=",".join(map(str, STEPS_PER_EXECUTION)),
                   help="Keras steps_per_execution values to try (the best is quoted)")
    p.add_argument("--startup-families", default=",".join(STARTUP_FAMILIES),
                   help="families timed from process start to first step ('' for none)")
    p.add_argument("--startup-rounds", type=int, default=3)
    p.add_argument("--overhead-repeats", type=int, default=2,
                   help="per row and round, how many times the loop and the graph limit are timed back to back")
    p.add_argument("--sagefit-variant", action="append", default=[], metavar="NAME:HP=V[,HP=V]",
                   help="one more sagefit column, trained with these hyperparameters")
    p.add_argument("--quick", action="store_true",
                   help="one round, steps_per_execution 32 only, one start-up round, one overhead timing")
    p.add_argument("--work", help="keep fixtures here and reuse them (default: a temporary folder)")
    p.add_argument("--render", metavar="RESULTS_JSON", help="only write the tables of an earlier run's results.json")
    p.add_argument("--keras-worker", help=argparse.SUPPRESS)
    p.add_argument("--keras-startup", nargs=4, metavar=("FAMILY", "FIXTURE", "BATCH", "THREADS"),
                   help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.keras_worker:
        print(json.dumps(keras_worker(json.loads(a.keras_worker))))
        return
    if a.keras_startup:
        fam, fixture, batch, threads = a.keras_startup
        keras_startup(fam, fixture, int(batch), int(threads))
        sys.exit("keras startup: fit ended without a batch")
    if a.render:
        with open(a.render) as f:
            res = json.load(f)
        write_tables(res, list(res["rows"]), a.markdown)
        return
    if a.quick:
        a.rounds, a.spe, a.startup_rounds, a.overhead_repeats = 1, "32", 1, 1

    variants = dict(SAGEFIT_VARIANTS)
    for v in a.sagefit_variant:
        name, _, hps = v.partition(":")
        variants[name] = dict(kv.split("=", 1) for kv in hps.split(",") if kv)
    ks = [int(k) for k in a.spe.split(",")]
    rows = a.rows.split(",") if a.rows else []
    startup_fams = [f for f in a.startup_families.split(",") if f]
    os.makedirs(a.out, exist_ok=True)
    t_start = time.time()
    log(f"rows {rows}, {a.rounds} rounds, {a.threads} threads; start-up {startup_fams}")

    from importlib.metadata import version

    res = {"rows": {}, "startup": {}, "machine": machine(), "tensorflow": version("tensorflow"),
           "threads": a.threads, "rounds": a.rounds, "startup_rounds": a.startup_rounds, "ks": ks,
           "overhead_repeats": a.overhead_repeats,
           "variants": variants,
           "load_before": load(), "loads": []}
    with tempfile.TemporaryDirectory(prefix="sagefit-bench-") as tmp:
        work = a.work or tmp

        def fixture(fam, nrows, jit=False):
            d = os.path.join(work, f"{fam}-{nrows}" + ("-jit" if jit else ""))
            if not os.path.exists(os.path.join(d, "done")):
                log(f"export {fam} ({nrows} rows{', jit_compile=True' if jit else ''})")
                make_fixture_proc(fam, d, nrows, jit)
                open(os.path.join(d, "done"), "w").close()
            return d

        def jit(variant):
            return str(variants[variant].get("jit_compile", "")).lower() == "true"

        for row in rows:
            for v in variants:
                fixture(CASES[row][0], CASES[row][2], jit(v))
        for fam in startup_fams:
            fixture(fam, startup_rows(fam, rows))
        job = os.path.join(tmp, "job")

        for r in range(a.rounds):
            res["loads"].append(load())
            for row in rows:
                fam, batch, nrows, k_epochs, s_epochs = CASES[row]
                fx = fixture(fam, nrows)
                entry = res["rows"].setdefault(row, {"keras": {}, "both_k": [], "sagefit": {},
                                                     "prefetch_off": [], "steplimit": []})
                runs = ["keras"] + list(variants) + (["prefetch_off"] if row in PREFETCH_ROWS else [])
                runs = runs[r % len(runs):] + runs[: r % len(runs)]
                for what in runs:
                    if what == "keras":
                        log(f"round {r + 1} {row}: Keras")
                        out = run_keras({"family": fam, "fixture": fx, "batch": batch, "epochs": k_epochs,
                                         "threads": a.threads, "ks": ks, "turn": r})
                        entry["both_k"].append(out.pop("both_k"))
                        for name, times in out.items():
                            entry["keras"].setdefault(name, []).append(times)
                    elif what == "prefetch_off":
                        log(f"round {r + 1} {row}: sagefit, prefetch off")
                        entry["prefetch_off"].append(
                            run_sagefit(a.sagefit, fx, job, s_epochs, batch, a.threads, {"prefetch": 0}))
                    else:
                        log(f"round {r + 1} {row}: {what}")
                        hps = {k: v for k, v in variants[what].items() if k != "jit_compile"}
                        t = run_sagefit(a.sagefit, fixture(fam, nrows, jit(what)), job, s_epochs, batch, a.threads, hps)
                        entry["sagefit"].setdefault(what, []).append(t)
                if a.steplimit:
                    # The overhead per step: the fit loop at one step per call
                    # against the graph limit, back to back, a.overhead_repeats
                    # times; and the loop with the batch hand-off taken away
                    # (prefetch beyond an epoch: the producer never waits, so
                    # no step wakes it), to measure what the hand-off costs;
                    # and the loop on the single-threaded executor.
                    k1 = {"steps_per_execution": "1"}
                    for rep in range(a.overhead_repeats):
                        got = {}
                        order = ["loop", "limit", "no_handoff", "loop_single"]
                        turn = (r * a.overhead_repeats + rep) % len(order)
                        for what in order[turn:] + order[:turn]:
                            log(f"round {r + 1} {row}: overhead {rep + 1}: {what}")
                            if what == "loop":
                                got[what] = run_sagefit(a.sagefit, fx, job, s_epochs, batch, a.threads, k1)
                            elif what == "loop_single":
                                got[what] = run_sagefit(a.sagefit, fx, job, s_epochs, batch, a.threads,
                                                        {"executor": "single_threaded"})
                            elif what == "no_handoff":
                                got[what] = run_sagefit(a.sagefit, fx, job, s_epochs, batch, a.threads,
                                                        {**k1, "prefetch": str(nrows // batch + 2)})
                            else:
                                steps = steplimit_steps(entry)
                                got[what] = run_steplimit(a.steplimit, fx, batch, a.threads, steps)
                        entry["steplimit"].append(got)

        if startup_fams:
            for fam in startup_fams:  # warm the page cache: one untimed run of each
                fx = fixture(fam, startup_rows(fam, rows))
                startup_keras(fam, fx, 32, a.threads)
                startup_sagefit(a.sagefit, fx, job, 32, a.threads)
            for r in range(a.startup_rounds):
                res["loads"].append(load())
                for fam in startup_fams:
                    fx = fixture(fam, startup_rows(fam, rows))
                    entry = res["startup"].setdefault(fam, {"keras": [], "sagefit": []})
                    for what in (["keras", "sagefit"] if r % 2 == 0 else ["sagefit", "keras"]):
                        log(f"start-up round {r + 1} {fam}: {what}")
                        if what == "keras":
                            entry["keras"].append(startup_keras(fam, fx, 32, a.threads))
                        else:
                            entry["sagefit"].append(startup_sagefit(a.sagefit, fx, job, 32, a.threads))
    res["minutes"] = (time.time() - t_start) / 60
    res["load_after"] = load()
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    write_tables(res, rows, a.markdown)


def write_tables(res, rows, markdown):
    """Print the tables and, with markdown, put them between its markers."""
    sections = render(res, rows)
    for text in sections.values():
        print(text + "\n")
    if markdown:
        body = open(markdown).read() if os.path.exists(markdown) else ""
        for name, text in sections.items():
            body = _replace_block(body, *MARKERS[name], text)
        with open(markdown, "w") as f:
            f.write(body)


def steplimit_steps(entry):
    """Steps per arm of the step-limit benchmark: about half a second each,
    from the row's sagefit runs so far."""
    ts = [t for v in entry["sagefit"].values() for t in v]
    step_s = min(t["after_first_epoch"]["seconds"] / t["after_first_epoch"]["steps"] for t in ts) if ts else 1e-3
    return int(min(max(0.5 / step_s, 20), 5000))


def startup_rows(fam, rows):
    """The fixture a start-up run uses: the row's own when the family is
    in the throughput rows, else a small one."""
    for r in rows:
        if CASES[r][0] == fam:
            return CASES[r][2]
    return 1024


def make_fixture_proc(fam, out, rows, jit=False):
    """make_fixture in a child process, so this one never builds a model."""
    code = ("import sys; from sagefit import bench; "
            "bench.make_fixture(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == 'jit')")
    p = subprocess.run([sys.executable, "-c", code, fam, out, str(rows), "jit" if jit else "-"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"export {fam} failed:\n{p.stderr[-4000:]}")


def startup_keras(fam, fixture, batch, threads):
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "sagefit.bench", "--keras-startup", fam, fixture, str(batch), str(threads)],
        capture_output=True, text=True, env=startup_env(),
    )
    if out.returncode != 0:
        raise RuntimeError(f"Keras start-up {fam} failed:\n{out.stderr[-4000:]}")
    marks = json.loads(out.stdout.strip().splitlines()[-1])
    return {"import": marks["imported"] - t0, "build": marks["built"] - marks["imported"],
            "data": marks["data"] - marks["built"], "first_step": marks["first_step_end"] - marks["data"],
            "total": marks["first_step_end"] - t0}


def startup_sagefit(binary, fixture, work, batch, threads):
    t0 = time.time()
    t = run_sagefit(binary, fixture, work, 1, batch, threads, {"steps_per_epoch": 1}, env=startup_env())
    s = t["startup"]
    return {"exec": s["process_start_unix"] - t0, "libraries": s["libraries_seconds"],
            "model_load": s["model_load_seconds"],
            "rest": s["to_first_step_seconds"] - s["libraries_seconds"] - s["model_load_seconds"],
            "first_step": s["first_step_seconds"], "total": s["first_step_end_unix"] - t0}


# ---------------------------------------------------------------- tables


def describe(hps):
    """A sagefit variant's settings in words."""
    words = []
    if str(hps.get("jit_compile", "")).lower() == "true":
        words.append("the model exported compiled with jit_compile=True (XLA)")
    words += [f"{k}={v}" for k, v in hps.items() if k != "jit_compile"]
    if "steps_per_execution" not in hps:
        words.append("steps_per_execution=auto (the default)")
    return ", ".join(words)


def per_step_us(t):
    """sagefit's wall time per step over the epochs after the first, µs."""
    s = t["after_first_epoch"]
    return s["seconds"] / s["steps"] * 1e6


def render(res, rows):
    out = {}
    ks, variants = res["ks"], res["variants"]
    head = (f"Measured {datetime.date.today()} on {res['machine']}; TensorFlow {res['tensorflow']} "
            f"(wheel, on CPU), {res['threads']} intra-op and inter-op threads on both sides. "
            f"{res['rounds']} round(s), interleaved (each round turns the order of the Keras and "
            f"sagefit runs and of Keras's variants); {res['minutes']:.0f} minutes in all. "
            f"Load average before the run: {res['load_before']}; at each round's start: "
            f"{'; '.join(res['loads'])}; after: {res['load_after']}.")
    if rows:
        spe_names = [f"spe{k}" for k in ks]
        table = [head, "",
                 "Examples per second over the epochs after the first, median over rounds "
                 "(rows, epochs: " + "; ".join(f"{LABELS[CASES[r][0]]} batch {CASES[r][1]}: {CASES[r][2]:,} rows, "
                                               f"{CASES[r][3]} Keras / {CASES[r][4]} sagefit epochs" for r in rows)
                 + "). **steps_per_execution**: the best of K = " + ", ".join(map(str, ks))
                 + "; **both**: jit_compile=True with the K that was best without it (K in brackets). "
                 "The best Keras variant of each row in bold. "
                 + "; ".join(f"**{v}**: {describe(hp)}" for v, hp in variants.items()) + ".", "",
                 "| model | batch | Keras default | Keras steps_per_execution | Keras jit_compile | Keras both | "
                 + " | ".join(variants) + " | " + " | ".join(f"{v} / best Keras" for v in variants)
                 + " | sagefit / Keras default |",
                 "|---|---|---|---|---|---|" + "---|" * (2 * len(variants) + 1)]
        targets = ["", "| target (ratio in this run) | best sagefit / best Keras | |", "|---|---|---|"]
        for row in rows:
            fam, batch, nrows, _, _ = CASES[row]
            e = res["rows"][row]
            kr = {name: med([steady(t, nrows) for t in ts]) for name, ts in e["keras"].items()}
            best_spe = max(spe_names, key=lambda n: kr[n])
            best = max(kr.values())
            sf = {v: med([t["after_first_epoch"]["examples_per_second"] for t in e["sagefit"][v]]) for v in variants}
            both_k = "/".join(str(k) for k in sorted(set(e["both_k"])))

            def cell(name):
                return f"**{kr[name]:,.0f}**" if kr[name] == best else f"{kr[name]:,.0f}"

            def sf_cell(v):  # with the steps per call each run took (timing.json's steps_per_call)
                ks = sorted({t["steps_per_call"] for t in e["sagefit"][v] if t.get("steps_per_call")})
                return f"{sf[v]:,.0f}" + (f" (K={'/'.join(map(str, ks))})" if ks else "")

            table.append(
                f"| {LABELS[fam]} | {batch} | {cell('default')} | {cell(best_spe)} (K={best_spe[3:]}) | "
                f"{cell('jit')} | {cell('both')} (K={both_k}) | "
                + " | ".join(sf_cell(v) for v in variants) + " | "
                + " | ".join(f"**{sf[v] / best:.2f}x**" for v in variants)
                + f" | {sf['sagefit'] / kr['default']:.2f}x |")
            goal = 2.0 if row == "seed-32" else 1.2
            top = max(variants, key=lambda v: sf[v])
            r = sf[top] / best
            targets.append(f"| {LABELS[fam]}, batch {batch}: at least {goal:.1f}x | {r:.2f}x ({top}) | "
                           + ("met" if r >= goal else "**missed**") + " |")
        out["bench"] = "\n".join(table + targets)

    step_rows = [r for r in rows if res["rows"][r]["steplimit"]]
    if step_rows:
        n = len(res["rows"][step_rows[0]]["steplimit"])
        st = ["Same run, µs per step, mean / median step, medians over "
              f"{n} timings per row (each round times the three below back to back, "
              f"{res.get('overhead_repeats', 1)} times, in turns). **graph limit**: the exported train_step run back to back "
              "from C on input tensors made once, fetching only its outputs, its ops in TensorFlow's inter-op pool "
              "(**pool**) and in the calling thread (**calling thread**, `RunOptions.inter_op_thread_pool` -1); "
              "beside it, from the same benchmark (`BenchmarkStepLimit` in model/tf, six ways in turns of 25 "
              "steps): in the pool, one call from Go per step, then with the input tensors made anew each step, "
              "then **TrainStep call**: `Model.TrainStep` on one batch made once, as the fit loop calls it; and "
              "that call in the calling thread. **sagefit**: the fit loop at one step per session call "
              "(`steps_per_execution=1`, the graph limit's unit), wall time per step over the epochs after the "
              "first / median step (timing.json `after_first_epoch`: `seconds / steps`, `step_seconds.p50`), where "
              "its probe last chose to run the steps (timing.json `inline`; in how many of the runs the calling "
              "thread), and its input-wait share. **no hand-off**: the same with prefetch deeper than an epoch, so "
              "the producer goroutine never waits and no step wakes it: a measurement of what handing each batch "
              "over costs, not a setting (it holds an epoch of batches). **Overhead**: sagefit over the faster "
              "graph limit.", "",
              "| model | batch | graph limit, pool | graph limit, calling thread | one Go call per step | "
              "+ tensors made per step | TrainStep call | TrainStep call, calling thread | sagefit | ran in | "
              "input wait | no hand-off | **overhead per step** (mean) | overhead (median) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        verdicts, single = [], []  # single: the rows of the single-threaded executor's table
        for row in step_rows:
            fam, batch, _, _, _ = CASES[row]
            e = res["rows"][row]["steplimit"]
            arm = {a: (med([g["limit"][a]["mean_ns"] / 1e3 for g in e]),
                       med([g["limit"][a]["p50_ns"] / 1e3 for g in e])) for a in ARMS if a in e[0]["limit"]}
            nan = (float("nan"), float("nan"))

            def loop(key):
                return (med([per_step_us(g[key]) for g in e]),
                        med([g[key]["after_first_epoch"]["step_seconds"]["p50"] * 1e6 for g in e]))

            lp, nh = loop("loop"), loop("no_handoff")
            wait = med([g["loop"]["after_first_epoch"]["input_wait_share"] * 100 for g in e])
            lim = min(arm["limit"], arm.get("inline-limit", arm["limit"]))
            over = (lp[0] - lim[0], lp[1] - lim[1])
            inline = sum(bool((g["loop"].get("inline") or {}).get("calling_thread")) for g in e)
            ran = "calling thread" if inline == len(e) else "pool" if inline == 0 else f"calling thread {inline}/{len(e)}"

            def pair(x):
                return f"{x[0]:,.1f} / {x[1]:,.1f}" if x[0] == x[0] else "-"

            st.append(f"| {LABELS[fam]} | {batch} | {pair(arm['limit'])} | {pair(arm.get('inline-limit', nan))} | "
                      f"{pair(arm['cgo'])} | {pair(arm['fresh'])} | "
                      f"{pair(arm['call'])} | {pair(arm.get('inline-call', nan))} | {pair(lp)} | {ran} | "
                      f"{wait:.1f}% | {pair(nh)} | "
                      f"**{over[0]:,.1f} µs ({100 * over[0] / lim[0]:.1f}%)** | "
                      f"{over[1]:,.1f} µs ({100 * over[1] / lim[1]:.1f}%) |")
            verdicts.append(f"{LABELS[fam]} batch {batch} {100 * over[0] / lim[0]:.1f}% "
                            + ("(met)" if over[0] <= 0.05 * lim[0] else "(**missed**)"))
            if "single-limit" in arm and "loop_single" in e[0]:
                sl, slim = loop("loop_single"), arm["single-limit"]
                sover = (sl[0] - slim[0], sl[1] - slim[1])
                single.append(f"| {LABELS[fam]} | {batch} | {pair(slim)} | {pair(arm['single-call'])} | {pair(sl)} | "
                              f"**{sover[0]:,.1f} µs ({100 * sover[0] / slim[0]:.1f}%)** | "
                              f"{sover[1]:,.1f} µs ({100 * sover[1] / slim[1]:.1f}%) | {lp[1] / sl[1]:.2f}x |")
        st += ["", "Target: overhead at most 5% of the faster graph limit (mean): " + "; ".join(verdicts) + "."]
        if single:
            st += ["", "The same on TensorFlow's single-threaded executor (the `executor` hyperparameter): **graph limit** "
                   "and **TrainStep call** as above on a second session of the model moved there "
                   "(`Model.MoveSingleThreaded`), **sagefit** the fit loop with `executor=single_threaded`, "
                   "**overhead** over that graph limit, and the loop against the default executor's loop above.", "",
                   "| model | batch | graph limit | TrainStep call | sagefit | **overhead per step** (mean) | overhead (median) "
                   "| sagefit, against the default executor's loop (median step) |",
                   "|---|---|---|---|---|---|---|---|"] + single
        out["steplimit"] = "\n".join(st)

    pre = [r for r in rows if res["rows"][r]["prefetch_off"]]
    if pre:
        pt = ["Same runs, sagefit (steps_per_execution=auto) with input prefetch on (2 batches, the default) and off: wall time per step "
              "over the epochs after the first and the share of the steps' time spent waiting for the batch "
              "(timing.json `after_first_epoch`), medians over rounds.", "",
              "| model | batch | prefetch | µs per step | input wait share |", "|---|---|---|---|---|"]
        for row in pre:
            fam, batch = CASES[row][:2]
            for label, ts in (("on", res["rows"][row]["sagefit"]["sagefit"]), ("off", res["rows"][row]["prefetch_off"])):
                w = med([t["after_first_epoch"]["input_wait_share"] * 100 for t in ts])
                pt.append(f"| {LABELS[fam]} | {batch} | {label} | {med([per_step_us(t) for t in ts]):,.1f} | {w:.1f}% |")
        out["prefetch"] = "\n".join(pt)

    if res["startup"]:
        su = ["Seconds from starting the process to the end of the first train step (batch 32, the same threads), "
              "both timed from the harness's clock, medians over "
              f"{res['startup_rounds']} interleaved rounds after one untimed run of each (page cache warm), "
              "TF_CPP_MIN_LOG_LEVEL unset as a user starts them. **Keras**: a script that imports TensorFlow and "
              "Keras, builds and compiles the model, loads the .npy data and calls `fit`, to the first batch's "
              "end (tracing and optimizing the train function is in its first step). **sagefit**: "
              "`sagefit local`, from timing.json's `startup`: to Go's init (exec and loading libtensorflow; with "
              "TF_CPP_MIN_LOG_LEVEL unset sagefit runs itself again once to quiet TensorFlow's start-up lines), "
              "loading the SavedModel into a session, the rest (job set-up, channel, first batch), the first "
              "step (TensorFlow prepares the step function on its first run).", "",
              "| model | Keras: import | build + compile | data | first step | **Keras total** | "
              "sagefit: to Go init | model load | rest | first step | **sagefit total** | sagefit / Keras |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        verdicts = []
        for fam, e in res["startup"].items():
            k = {f: med([x[f] for x in e["keras"]]) for f in ("import", "build", "data", "first_step", "total")}
            s = {f: med([x[f] for x in e["sagefit"]]) for f in ("exec", "libraries", "model_load", "rest", "first_step", "total")}
            su.append(f"| {LABELS[fam]} | {k['import']:.2f} | {k['build']:.2f} | {k['data']:.2f} | "
                      f"{k['first_step']:.2f} | **{k['total']:.2f}** | {s['exec'] + s['libraries']:.2f} | "
                      f"{s['model_load']:.2f} | {s['rest']:.2f} | {s['first_step']:.2f} | "
                      f"**{s['total']:.2f}** | **{s['total'] / k['total']:.2f}x** |")
            verdicts.append(f"{LABELS[fam]} {s['total'] / k['total']:.2f}x "
                            + ("(met)" if s["total"] <= 0.5 * k["total"] else "(**missed**)"))
        su += ["", "Target: at most half of Keras's time: " + "; ".join(verdicts) + "."]
        out["startup"] = "\n".join(su)
    return out


def _replace_block(body, begin, end, text):
    block = f"{begin}\n{text}\n{end}"
    if begin in body and end in body:
        return body[: body.index(begin)] + block + body[body.index(end) + len(end):]
    return body + "\n" + block + "\n"


if __name__ == "__main__":
    main()
