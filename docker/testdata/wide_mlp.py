"""A model whose weights take rank 0 a while to save, and data for it.

    python docker/testdata/wide_mlp.py OUT [--rows N] [--width W] [--shards K]

writes OUT/model (sagefit.export of Dense(W) -> Dense(W) -> Dense(1) on 10
features, adam: about 3 W^2 floats of weights and optimizer state to save)
and OUT/train, OUT/validation (.npy). With --shards K it also writes
OUT/train-1 .. OUT/train-K, shard k holding half the rows of shard k-1, for
ShardedByS3Key jobs in which the hosts after the first get less work. The
final-barrier tests use it: a host other than rank 0 ends its part long
before rank 0 has written such a model.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--shards", type=int, default=0)
    a = p.parse_args()

    import keras
    import sagefit

    model = keras.Sequential([
        keras.Input((10,)),
        keras.layers.Dense(a.width, activation="relu"),
        keras.layers.Dense(a.width, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    sagefit.export(model, os.path.join(a.out, "model"))

    rng = np.random.default_rng(1)

    def write(folder, n):
        x = rng.random((n, 10), dtype=np.float32)
        y = (x.sum(axis=1) > 5).astype(np.float32)
        os.makedirs(os.path.join(a.out, folder), exist_ok=True)
        np.save(os.path.join(a.out, folder, "train.npy"), x)
        np.save(os.path.join(a.out, folder, "labels.npy"), y)

    write("train", a.rows)
    write("validation", max(1, a.rows // 4))
    # Shard k (1-based) holds rows / 2^(k-1) rows: host 1 the most.
    for k in range(1, a.shards + 1):
        write(f"train-{k}", max(1, a.rows >> (k - 1)))


if __name__ == "__main__":
    main()
