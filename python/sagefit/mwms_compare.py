"""Train a sagefit fixture with TensorFlow's own MultiWorkerMirroredStrategy.

    python -m sagefit.mwms_compare --fixture DIR --workers 2 --batch 16 \\
        --epochs 2 --out RESULT.json

The peer that ``sagefit local --hosts N`` is compared with (issue 17): N
tf-keras worker processes on 127.0.0.1, one CPU replica each, train the
fixture's model (``DIR/model``, exported before any training by
``python -m sagefit.testing FAMILY DIR --no-fit``, with
``TF_USE_LEGACY_KERAS=1``) on ``DIR/train/train.npy`` and ``labels.npy``:

- from the same initial weights: the model is rebuilt with the fixture's
  family builder inside the strategy's scope and every model variable is
  assigned the value the exported SavedModel holds (its
  ``sagefit_read_variables`` signature, names from ``sagefit.json``), then
  read back and checked equal;
- on the same batches: sagefit host r takes rows [s*N*B + r*B, s*N*B +
  (r+1)*B) of global batch s (shuffle off); worker r gets exactly those
  rows, in that order, from its own ``tf.data`` pipeline (auto-sharding
  off, per-replica batch B, so the global batch is N*B), through
  ``strategy.distribute_datasets_from_function``.

tf-keras, not Keras 3: tf-keras creates BatchNormalization's moving
statistics ``SyncOnRead`` with ``aggregation=MEAN`` (read as the mean over
replicas, which sagefit reproduces), whereas Keras 3 under this strategy
keeps replica 0's copy and its ``fit()`` fails under multi-worker MWMS
(keras-team/keras#20585).

RESULT.json holds ``history`` (Keras's History dict as worker 0's ``fit``
returns it), ``moving_mean`` and ``moving_variance`` (the first
BatchNormalization layer's, read from the layer, i.e. aggregated over the
replicas as the strategy reads them; empty for a model without one), ``variables`` (every model variable
so read, by name), ``local`` (each worker's own replica copy of the
non-trainable variables) and ``num_replicas_in_sync``.

The workers are subprocesses of this module, on free loopback ports,
CUDA hidden; every wait is bounded (``--timeout``) and on any failure all
of them are killed. Exit status 3 means TensorFlow imported but the
workers never formed a cluster (the strategy could not start on
loopback here); any other failure exits 1.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from sagefit._procs import kill_groups, read_all  # noqa: E402
from sagefit.weights import trained_values  # noqa: E402

IMPORTED = "MWMS_TF_IMPORTED"  # a worker has TensorFlow loaded
READY = "MWMS_READY"  # a worker has joined the cluster (first collective done)
DONE = "MWMS_DONE"  # a worker has printed its whole result and waits to be stopped
EXIT_NO_CLUSTER = 3


def shards(rows, workers, batch):
    """Row indices each worker takes, in order: worker r gets the r-th
    contiguous block of ``batch`` rows of every global batch of
    ``workers*batch`` rows, as sagefit's hosts do with shuffle off."""
    g = workers * batch
    if rows % g:
        # sagefit splits a partial last global batch into near-equal parts;
        # MWMS would weigh such a step differently (its loss is scaled by the
        # global batch), so the comparison is only made on whole batches.
        raise SystemExit(f"{rows} rows are not a whole number of global batches of "
                         f"{workers}x{batch}; give rows divisible by {g}")
    return [np.concatenate([np.arange(s + r * batch, s + (r + 1) * batch)
                            for s in range(0, rows, g)]) for r in range(workers)]


# ---------------------------------------------------------------- one worker


def worker(a):
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": a.addrs.split(",")},
        "task": {"type": "worker", "index": a.worker},
    })
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    print(IMPORTED, flush=True)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    n = strategy.num_replicas_in_sync

    @tf.function(autograph=False)
    def barrier():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.ones([1])))

    joined = strategy.experimental_local_results(barrier())[0].numpy()[0]
    print(READY, flush=True)
    if n != a.workers or joined != a.workers:
        raise SystemExit(f"{n} replicas in sync ({joined} joined), want {a.workers}: "
                         "one CPU replica per worker")

    import tf_keras
    from sagefit import testing

    with open(os.path.join(a.fixture, "reference.json")) as f:
        family = json.load(f)["family"]
    init = trained_values(os.path.join(a.fixture, "model"))

    tf_keras.utils.set_random_seed(1)
    with strategy.scope():
        model = testing.FAMILIES[family][0]()
    names = {v.name.removesuffix(":0"): v for v in model.variables}
    if set(names) != set(init):
        raise SystemExit(f"model variables {sorted(names)} != the fixture's {sorted(init)}")
    for name, v in names.items():
        v.assign(init[name])  # in cross-replica context: every replica's copy
    for name, v in names.items():
        for i, local in enumerate(strategy.experimental_local_results(v)):
            if not np.array_equal(local.numpy(), init[name]):
                raise SystemExit(f"{name} (replica {i}) differs from the fixture's initial value")

    x = np.load(os.path.join(a.fixture, "train", "train.npy"))
    y = np.load(os.path.join(a.fixture, "train", "labels.npy"))
    mine = shards(len(x), a.workers, a.batch)[a.worker]
    global_batch = a.workers * a.batch

    def dataset(ctx):
        if ctx.input_pipeline_id != a.worker or ctx.get_per_replica_batch_size(global_batch) != a.batch:
            raise ValueError(f"input pipeline {ctx.input_pipeline_id} of {ctx.num_input_pipelines}, "
                             f"per-replica batch {ctx.get_per_replica_batch_size(global_batch)}")
        # Repeated: fit() wants steps for a distributed dataset, and keeps one
        # iterator across epochs then; an epoch is exactly one pass.
        ds = tf.data.Dataset.from_tensor_slices((x[mine], y[mine])).batch(a.batch).repeat()
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        opts.deterministic = True
        return ds.with_options(opts)

    dist = strategy.distribute_datasets_from_function(dataset)
    hist = model.fit(dist, epochs=a.epochs, steps_per_epoch=len(x) // global_batch,
                     shuffle=False, verbose=0)

    # Reading a SyncOnRead variable in cross-replica context all-reduces it
    # over the workers: every worker reads, in the same order.
    variables = {name: np.asarray(v.numpy(), np.float64).ravel().tolist() for name, v in names.items()}
    local = {name: np.asarray(strategy.experimental_local_results(v)[0].numpy(),
                              np.float64).ravel().tolist()
             for name, v in names.items() if not v.trainable}
    bn = next((l for l in model.layers if isinstance(l, tf_keras.layers.BatchNormalization)), None)
    stat = (lambda v: np.asarray(v.numpy(), np.float64).tolist()) if bn else (lambda v: [])
    res = {
        "worker": a.worker,
        "num_replicas_in_sync": n,
        "tensorflow_version": tf.__version__,
        "keras_version": tf_keras.__version__,
        "history": {k: [float(v) for v in vs] for k, vs in hist.history.items()},
        "moving_mean": stat(bn and bn.moving_mean),
        "moving_variance": stat(bn and bn.moving_variance),
        "variables": variables,
        "local": local,
    }
    strategy.experimental_local_results(barrier())[0].numpy()  # every worker done reading
    print("RESULT " + json.dumps(res), flush=True)
    print(DONE, flush=True)
    # Stay up until the driver has every worker's result: a worker that
    # leaves takes its gRPC server with it while a peer may still be
    # receiving the last chunk of the barrier's all-reduce from it (CI saw
    # "Socket closed" there). The driver kills the workers; if the driver is
    # gone, stdin closes and the worker leaves by itself. os._exit because
    # TensorFlow's gRPC server can hold a clean exit long after the peers
    # are gone.
    sys.stdin.read()
    os._exit(0)


# ---------------------------------------------------------------- the driver


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoCluster(RuntimeError):
    """No worker got through the first collective: TensorFlow can't form
    a cluster on loopback here."""


class Formation(RuntimeError):
    """A worker failed before every worker got through the first collective
    (seen once in CI: "Socket closed" from the peer's gRPC server while the
    cluster formed); a new cluster on fresh ports is worth a try."""


def run_cluster(a, attempts=3):
    """run_workers, started again on fresh ports when the cluster fails to
    form; what fails after that is reported as it is."""
    for attempt in range(1, attempts + 1):
        try:
            return run_workers(a)
        except (NoCluster, Formation) as e:
            if attempt == attempts:
                raise
            print(f"MWMS cluster did not form (attempt {attempt} of {attempts}), "
                  f"starting again on fresh ports: {e}", file=sys.stderr)


def run_workers(a):
    """Start the workers, wait for all (bounded), return their results."""
    addrs = ",".join(f"127.0.0.1:{free_port()}" for _ in range(a.workers))
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env.pop("TF_CONFIG", None)
    logs = tempfile.mkdtemp(prefix="sagefit-mwms-")
    procs, outs, errs = [], [], []
    ok = False  # the logs stay for a failure only
    try:
        for r in range(a.workers):
            argv = [sys.executable, "-m", "sagefit.mwms_compare", "--fixture", a.fixture,
                    "--workers", str(a.workers), "--batch", str(a.batch), "--epochs", str(a.epochs),
                    "--worker", str(r), "--addrs", addrs]
            out = open(os.path.join(logs, f"worker{r}.out"), "w+")
            err = open(os.path.join(logs, f"worker{r}.err"), "w+")
            outs.append(out)
            errs.append(err)
            procs.append(subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=out,
                                          stderr=err, start_new_session=True))

        # Every worker stays up once done (see worker), so the wait is for
        # every DONE line, a failed worker or the deadline.
        deadline = time.monotonic() + a.timeout
        while True:
            stdouts = [read_all(o) for o in outs]
            done = [DONE in s for s in stdouts]
            failed = [r for r, p in enumerate(procs) if p.poll() is not None and not done[r]]
            if all(done) or failed or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        bad = [r for r in range(a.workers) if not done[r]]
        if bad:
            r = next((r for r in bad if procs[r].returncode is not None), bad[0])
            why = (f"still running after {a.timeout} s" if procs[r].returncode is None
                   else f"exited {procs[r].returncode}")
            tail = " | ".join([l for l in read_all(errs[r]).splitlines() if l.strip()][-8:])
            msg = f"MWMS worker {r} {why}: {tail} (logs in {logs})"
            if all(IMPORTED in s for s in stdouts) and not any(READY in s for s in stdouts):
                raise NoCluster(msg)
            if not all(READY in s for s in stdouts):
                raise Formation(msg)
            raise RuntimeError(msg)
        results = [json.loads(l[len("RESULT "):]) for s in stdouts
                   for l in s.splitlines() if l.startswith("RESULT ")]
        if len(results) != a.workers:
            raise RuntimeError(f"{len(results)} of {a.workers} workers reported (logs in {logs})")
        ok = True
        return sorted(results, key=lambda res: res["worker"])
    finally:
        kill_groups(procs)
        for p in procs:
            p.stdin.close()
        for f in outs + errs:
            f.close()
        if ok:
            shutil.rmtree(logs, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fixture", required=True, help="a sagefit.testing fixture made with tf-keras")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=16, help="per-worker (per-replica) batch size")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", help="where to write RESULT.json")
    p.add_argument("--timeout", type=float, default=90, help="seconds for all workers together")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # internal: run one worker
    p.add_argument("--addrs", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.fixture = os.path.abspath(a.fixture)
    if a.worker is not None:
        worker(a)
        return
    if not a.out:
        p.error("--out is required")
    x = np.load(os.path.join(a.fixture, "train", "train.npy"), mmap_mode="r")
    shards(len(x), a.workers, a.batch)  # refuses partial global batches before starting anything
    t0 = time.monotonic()
    try:
        results = run_cluster(a)
    except NoCluster as e:
        print(f"TensorFlow could not start MultiWorkerMirroredStrategy workers on loopback: {e}",
              file=sys.stderr)
        sys.exit(EXIT_NO_CLUSTER)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    res = dict(results[0])
    res["seconds"] = round(time.monotonic() - t0, 2)
    res["local"] = {str(r["worker"]): r["local"] for r in results}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
