"""Train a sagefit fixture with Keras 3 under TensorFlow's MirroredStrategy.

    python -m sagefit.mirrored_compare --fixture DIR --replicas 2 --batch 16 \\
        --epochs 2 --out RESULT.json

The Keras 3 peer that ``sagefit local --hosts N`` is compared with (Keras 3's
``fit`` fails under multi-worker MultiWorkerMirroredStrategy,
keras-team/keras#20585, so ``mwms_compare`` takes tf-keras): one process,
its CPU split into N logical devices, one replica on each, trains the
fixture's model (``DIR/model``, exported before any training by ``python -m
sagefit.testing FAMILY DIR --no-fit``) on ``DIR/train/train.npy`` and
``labels.npy``:

- from the same initial weights: the model is rebuilt with the fixture's
  family builder inside the strategy's scope and every model variable is
  assigned the value the exported SavedModel holds, then read back and
  checked equal;
- on the same batches: the strategy splits each global batch of N*B rows
  into N consecutive parts, part r to replica r, and sagefit host r takes
  the same part of each global batch (shuffle off).

RESULT.json holds ``history`` (Keras's History dict), ``variables`` (every
model variable by name, as read in cross-replica context) and
``num_replicas_in_sync``, in the shape ``mwms_compare`` writes.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

from sagefit.mwms_compare import shards  # noqa: E402
from sagefit.weights import trained_values  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fixture", required=True, help="a sagefit.testing fixture made with Keras 3")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--batch", type=int, default=16, help="per-replica batch size")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", required=True, help="where to write RESULT.json")
    a = p.parse_args()
    fixture = os.path.abspath(a.fixture)
    x = np.load(os.path.join(fixture, "train", "train.npy"))
    y = np.load(os.path.join(fixture, "train", "labels.npy"))
    per_replica = shards(len(x), a.replicas, a.batch)  # refuses partial global batches
    t0 = time.monotonic()

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * a.replicas)
    import keras

    from sagefit import testing

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{r}" for r in range(a.replicas)])
    if strategy.num_replicas_in_sync != a.replicas:
        raise SystemExit(f"{strategy.num_replicas_in_sync} replicas in sync, want {a.replicas}")
    with open(os.path.join(fixture, "reference.json")) as f:
        family = json.load(f)["family"]
    init = trained_values(os.path.join(fixture, "model"))
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = testing.FAMILIES[family][0]()
    names = {v.path: v for v in model.variables}
    if set(names) != set(init):
        raise SystemExit(f"model variables {sorted(names)} != the fixture's {sorted(init)}")
    for name, v in names.items():
        v.assign(init[name])
        if not np.array_equal(np.asarray(v.numpy()), init[name]):
            raise SystemExit(f"{name} differs from the fixture's initial value")

    # Global batch s is host 0's B rows of it, then host 1's, ...: the rows
    # in their order, as sagefit's hosts take them with shuffle off.
    assert np.array_equal(np.stack([r.reshape(-1, a.batch) for r in per_replica], 1).ravel(), np.arange(len(x)))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(a.replicas * a.batch)
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    opts.deterministic = True
    hist = model.fit(ds.with_options(opts), epochs=a.epochs, shuffle=False, verbose=0)
    res = {
        "num_replicas_in_sync": strategy.num_replicas_in_sync,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "history": {k: [float(v) for v in vs] for k, vs in hist.history.items()},
        "variables": {name: np.asarray(v.numpy(), np.float64).ravel().tolist() for name, v in names.items()},
        "seconds": round(time.monotonic() - t0, 2),
    }
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
