"""Single-host training throughput: sagefit against Keras ``model.fit``.

    python -m sagefit.bench --sagefit bin/sagefit [--markdown BENCHMARKS.md]

For each model family it exports the model once, then trains it on the same
data, batch size, thread counts and number of epochs with Keras ``model.fit``
(in its own process) and with ``sagefit local``. Throughput is examples per
second over the epochs after the first (the first includes tracing and
warm-up on both sides). Prints a table and, with --markdown, replaces the
section between the markers in that file.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# family -> rows, batch size, epochs
CASES = {
    "seed": (32000, 32, 4),
    "cnn": (2048, 32, 3),
}
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
PBEGIN = "<!-- prefetch:begin -->"
PEND = "<!-- prefetch:end -->"


def keras_fit(family, fixture, epochs, batch_size, threads):
    """Run model.fit in this process; return seconds per epoch."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    from sagefit import testing

    keras.utils.set_random_seed(1)
    model = testing.FAMILIES[family][0]()
    train = os.path.join(fixture, "train")
    x = np.load(os.path.join(train, "train.npy"))
    y = np.load(os.path.join(train, "labels.npy"))
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[Timer()])
    return times


def sagefit_fit(binary, fixture, epochs, batch_size, threads, work, prefetch=2):
    """Train with sagefit local; return timing.json (epoch and input-wait seconds)."""
    out = os.path.join(work, "job")
    cmd = [
        binary, "local",
        "--model", os.path.join(fixture, "model"),
        "--channel", "training=" + os.path.join(fixture, "train"),
        "--hp", f"epochs={epochs}",
        "--hp", f"batch_size={batch_size}",
        "--hp", f"intra_op_threads={threads}",
        "--hp", f"inter_op_threads={threads}",
        "--hp", f"prefetch={prefetch}",
        "--output", out,
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "output", "data", "timing.json")) as f:
        return json.load(f)


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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sagefit", default="bin/sagefit")
    p.add_argument("--markdown")
    p.add_argument("--families", default=",".join(CASES))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--keras-worker", nargs=3, metavar=("FAMILY", "FIXTURE", "EPOCHS"),
                   help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=None)
    a = p.parse_args()
    if a.keras_worker:
        family, fixture, epochs = a.keras_worker
        times = keras_fit(family, fixture, int(epochs), a.batch_size, a.threads)
        print(json.dumps(times))
        return

    import tensorflow as tf

    from sagefit import testing

    rows_out = []
    prefetch_out = []
    with tempfile.TemporaryDirectory() as work:
        for family in a.families.split(","):
            rows, batch, epochs = CASES[family]
            fixture = os.path.join(work, family)
            testing.make(family, fixture, epochs=epochs, batch_size=batch, rows=rows,
                         validation=False, fit=False)
            out = subprocess.run(
                [sys.executable, "-m", "sagefit.bench", "--keras-worker", family, fixture,
                 str(epochs), "--batch-size", str(batch), "--threads", str(a.threads)],
                check=True, capture_output=True, text=True,
            ).stdout
            keras_times = json.loads(out.strip().splitlines()[-1])
            sf = sagefit_fit(a.sagefit, fixture, epochs, batch, a.threads,
                             os.path.join(work, family + "-run"))
            sf_times = sf["epoch_seconds"]
            off = sagefit_fit(a.sagefit, fixture, epochs, batch, a.threads,
                              os.path.join(work, family + "-noprefetch"), prefetch=0)
            for label, t in (("on (2 batches)", sf), ("off", off)):
                secs = sum(t["epoch_seconds"][1:])
                wait = sum(t["input_wait_seconds"][1:])
                steps = t["steps_per_epoch"] * (len(t["epoch_seconds"]) - 1)
                prefetch_out.append((family, label, 1e6 * secs / steps, 100 * wait / secs))
            k = rows / (sum(keras_times[1:]) / len(keras_times[1:]))
            s = rows / (sum(sf_times[1:]) / len(sf_times[1:]))
            rows_out.append((family, batch, rows, epochs, k, s, s / k))
            print(f"{family:6s} batch {batch:3d}: keras {k:10.0f} ex/s  sagefit {s:10.0f} ex/s  ratio {s / k:5.2f}x",
                  flush=True)

    table = [
        f"Measured {datetime.date.today()} on {machine()}; TensorFlow {tf.__version__} "
        f"(wheel, on CPU), {a.threads} intra-op and inter-op threads on both sides, "
        "shuffle on, epochs after the first averaged.",
        "",
        "| model | batch | examples/epoch | epochs | Keras model.fit ex/s | sagefit ex/s | sagefit / Keras |",
        "|---|---|---|---|---|---|---|",
    ]
    for family, batch, rows, epochs, k, s, r in rows_out:
        table.append(f"| {family} | {batch} | {rows} | {epochs} | {k:,.0f} | {s:,.0f} | {r:.2f}x |")
    text = "\n".join(table)
    print(text)
    ptable = [
        "Same runs, sagefit with input prefetch on and off: time per step and the share of "
        "it spent waiting for the batch (`input_wait_seconds` of timing.json).",
        "",
        "| model | prefetch | µs per step | input wait / step time |",
        "|---|---|---|---|",
    ]
    for family, label, us, pct in prefetch_out:
        ptable.append(f"| {family} | {label} | {us:,.0f} | {pct:.1f}% |")
    ptext = "\n".join(ptable)
    print(ptext)
    if a.markdown:
        body = open(a.markdown).read() if os.path.exists(a.markdown) else ""
        body = _replace_block(body, BEGIN, END, text)
        body = _replace_block(body, PBEGIN, PEND, ptext)
        with open(a.markdown, "w") as f:
            f.write(body)


def _replace_block(body, begin, end, text):
    block = f"{begin}\n{text}\n{end}"
    if begin in body and end in body:
        return body[: body.index(begin)] + block + body[body.index(end) + len(end):]
    return body + "\n" + block + "\n"


if __name__ == "__main__":
    main()
