"""The seed article's Example 3, the sagefit way: data as .npy, a compiled
Keras model exported once with sagefit.export. Training runs in Go.

    python seed_example3.py OUT
writes OUT/data/{train,labels}.npy (the "training" channel) and OUT/model
(the "model" channel).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402

import sagefit  # noqa: E402

out = sys.argv[1]
num_samples, input_dim = 1000, 10
rng = np.random.default_rng(0)
X = rng.random((num_samples, input_dim), dtype=np.float32)
y = rng.integers(0, 2, num_samples).astype(np.float32)
os.makedirs(os.path.join(out, "data"), exist_ok=True)
np.save(os.path.join(out, "data", "train.npy"), X)
np.save(os.path.join(out, "data", "labels.npy"), y)

model = keras.Sequential(
    [
        keras.Input(shape=(input_dim,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ]
)
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
sagefit.export(model, os.path.join(out, "model"), overwrite=True)
print(f"exported {os.path.join(out, 'model')} and data in {os.path.join(out, 'data')}")
