"""Export time of a training SavedModel against Keras's own model.export().

``python -m sagefit.export_speed [--rounds N]`` builds MobileNetV2 (32x32x3,
10 classes, untrained), compiled with Adam, and times, in one process and
alternating, ``sagefit.export(model, dir)`` (every training signature) and
``model.export(dir)`` (Keras's serving-only SavedModel) on fresh copies of the
model. It prints the median of each and their ratio.
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build():
    import keras

    keras.utils.set_random_seed(1)
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main():
    import sagefit

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    times = {"sagefit.export": [], "model.export": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for what in times:
                model = build()
                out = os.path.join(tmp, f"{what}-{r}")
                start = time.perf_counter()
                if what == "sagefit.export":
                    sagefit.export(model, out)
                else:
                    model.export(out, verbose=False)
                times[what].append(time.perf_counter() - start)
    s, k = statistics.median(times["sagefit.export"]), statistics.median(times["model.export"])
    for what, ts in times.items():
        print(f"{what:15s} median {statistics.median(ts):6.1f} s  runs {', '.join(f'{t:.1f}' for t in ts)}")
    print(f"ratio {s / k:.2f}x")


if __name__ == "__main__":
    main()
