"""Export a compiled Keras model as a sagefit training SavedModel.

The SavedModel is written with ``keras.export.ExportArchive`` because it saves
the variables that the endpoint functions actually capture; a plain
``tf.saved_model.save`` of a Keras 3 object saves stand-in variables that the
C API loader restores instead (see shared/notes/keras3-savedmodel-c-api.md).
"""

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings

import numpy as np

from sagefit import contract


class ExportError(ValueError):
    """A model that sagefit cannot train."""


def _is_legacy_keras(model):
    """True for tf-keras (Keras 2, TF_USE_LEGACY_KERAS=1) models, a user's
    own subclass of tf_keras.Model (defined in __main__, say) included."""
    return any(c.__module__.startswith("tf_keras") for c in type(model).__mro__)


def _keras_for(model):
    if _is_legacy_keras(model):
        import tf_keras

        return tf_keras
    import keras

    return keras


def _var_name(v):
    name = getattr(v, "path", None) or v.name
    return name[:-2] if name.endswith(":0") else name


def _metric_variables(model):
    if hasattr(model, "metrics_variables"):
        return list(model.metrics_variables)
    out = []
    for m in model.metrics:
        for v in m.variables:
            if not any(v is w for w in out):
                out.append(v)
    return out


def _keras_own(obj):
    return type(obj).__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow")


def _own_metrics(model):
    """Names of the compiled metrics whose class is the user's own (a
    keras.metrics.Metric subclass): on several hosts the runtime sums
    metric states, right for Keras's own (totals and counts), not for a
    state that is no sum. Metric functions are wrapped in Keras's mean."""
    return _compiled_metrics(model, lambda m: not _keras_own(m))


def _compiled_metrics(model, pick):
    """Names of the compiled metrics pick chooses, as the logs name them."""
    out = []

    def walk(metrics):
        for m in metrics:
            sub = getattr(m, "metrics", None)
            if _keras_own(m) and isinstance(sub, (list, tuple)) and sub:
                walk(sub)  # Keras 3's CompileMetrics holds the compiled ones
            elif pick(m) and m.name not in out:
                out.append(m.name)

    walk(getattr(model, "metrics", []))
    # Named as the logs name them: a model of several outputs logs a
    # metric as <output>_<name>, one per output.
    logged = [k for k in _metric_names(model.get_metrics_result()) if any(k == n or k.endswith("_" + n) for n in out)]
    return logged or out


def _step_logs(step, outputs, metric_names):
    """The logs a custom step returns, in its order, where their names are
    not the metrics' (a test_step that leaves out a tracker only its
    train_step updates, a gradient norm beside the metrics): fit's epoch
    logs are then the last step's values (Keras's
    _get_metrics_result_or_logs), and so are the runtime's. None where they
    are the metrics'."""
    keys = [str(k) for k in outputs]
    if not keys:
        raise ExportError(
            f"the model's {step} returns no logs; return at least the loss, as Keras's does "
            "({m.name: m.result() for m in self.metrics})")
    # The runtime's logs and history hold one number per log; fit's
    # history holds a metric of one value per class as an array.
    for k in keys:
        shape = getattr(outputs[k], "shape", None)
        if shape is not None and shape.rank != 0:
            what = "of unknown shape" if shape.rank is None else f"of shape {tuple(shape)}"
            raise ExportError(
                f"the {step.replace('_', ' ')} logs {k} as a value {what}; sagefit logs one number per metric. "
                "A metric of one value per class or threshold (F1Score and FBetaScore by default, "
                "Precision or Recall given several thresholds) takes average=\"micro\", \"macro\" "
                f"or \"weighted\", or one threshold per metric; a {step} of your own returns numbers")
    return None if set(keys) == set(metric_names) else keys


def _loss_reductions(model, names):
    """Output -> reduction, for the compiled losses not reduced to a mean
    over the batch (Keras's default): several processes weigh each one's
    gradient by its rows, right for a mean only; the runtime refuses a sum
    there ("none" sums the rows' losses too) and names the others."""
    out = {}
    for i, loss in _compiled_losses(model, names):
        reduction = getattr(loss, "reduction", "sum_over_batch_size")
        if reduction is None or reduction == "none":
            out[names[i]] = "sum"  # the rows' losses, which compile sums
        elif reduction not in ("sum_over_batch_size", "auto", "mean"):
            out[names[i]] = str(reduction)
    return out


def _labels_as_given(model, out_names):
    """Names of the losses and metrics of the user's own that get the labels
    in the shape fit was given them (Keras 3: a Loss or Metric subclass, or
    a metric function in Keras's mean); Keras's own, and a loss function
    (Keras wraps it), match the labels' rank to the predictions' first, and
    tf-keras does so for all. The runtime feeds labels in the target's shape
    and warns where a file's differ (N, against (N, 1)) beside these."""
    keras = _keras_for(model)
    # A step of the user's own gets the labels as fit was given them, in
    # either Keras (tf-keras's compiled metrics match ranks; a step's own
    # code need not).
    steps = [step for step in ("train_step", "test_step")
             if getattr(type(model), step) is not getattr(keras.Model, step)]
    if _is_legacy_keras(model):
        return steps

    def own(obj):
        return obj is not None and getattr(obj, "__module__", type(obj).__module__).split(".")[0] not in ("keras", "tf_keras", "tensorflow")

    names = steps + _compiled_metrics(model, lambda m: not _keras_own(m) or own(getattr(m, "_fn", None)))
    for _, loss in _compiled_losses(model, out_names):
        if hasattr(loss, "call") and not _keras_own(loss):  # a Loss subclass of the user's; a function has no call
            name = getattr(loss, "name", type(loss).__name__)
            if name not in names:
                names.append(name)
    return names


def _read(v):
    """A tensor of a variable's value (Keras 3 variables wrap a tf.Variable)."""
    value = getattr(v, "value", v)
    return value() if callable(value) else value


def _spec_name(name, taken):
    key = re.sub(r"[^A-Za-z0-9_]", "_", name) or "t"
    if not re.match(r"[A-Za-z]", key):
        key = "t_" + key
    base, i = key, 1
    while key in taken:
        i += 1
        key = f"{base}_{i}"
    taken.add(key)
    return key


def _dtype_name(dtype):
    import tensorflow as tf

    return tf.as_dtype(dtype).name


def _tensor_desc(name, key, shape, dtype):
    return {
        "name": name,
        "key": key,
        "dtype": _dtype_name(dtype),
        "shape": [None if d is None else int(d) for d in shape],
    }


def _is_sparse_loss(loss):
    """Whether a loss (a name, a function or a Loss object) takes integer
    class labels, so its target has no class axis."""
    names = [loss if isinstance(loss, str) else type(loss).__name__,
             getattr(loss, "__name__", ""), getattr(loss, "name", "")]
    return any("sparse" in str(n).lower() for n in names)


def _sparse_outputs(model, out_names):
    """For each output, whether its own loss is sparse: compile's loss may
    be one for all outputs, a list in output order, or a dict by name."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, dict):
        return [_is_sparse_loss(loss.get(n)) if loss.get(n) is not None else False for n in out_names]
    if isinstance(loss, (list, tuple)):
        if len(loss) == len(out_names):
            return [_is_sparse_loss(item) for item in loss]
        return [any(_is_sparse_loss(item) for item in loss)] * len(out_names)
    return [_is_sparse_loss(loss)] * len(out_names)


def _input_tensors(model):
    inputs = getattr(model, "inputs", None)
    if not inputs and not any(c.__name__ == "Sequential" for c in type(model).__mro__):
        # Built or not, a subclass's call() has no keras.Input of its own.
        cls = type(model)
        keras = _keras_for(model)
        own_steps = _own_steps(model)
        what = (f"the model is a subclass of keras.Model ({cls.__name__}) "
                + ("with a call() of its own, whose inputs Keras does not record"
                   if cls.call is not keras.Model.call else "without a call()")
                + ", and sagefit exports models built on keras.Input (their call serves the trained model)")
        if own_steps:
            # A wrapper would drop the class's own step.
            raise ExportError(
                f"{what}: keep its {', '.join(own_steps)} and give its __init__ keras.Model's inputs and "
                "outputs, super().__init__(inputs, outputs) with inputs = keras.Input(shape) and outputs "
                "what the model computes from them (a VAE's decoder(encoder(inputs)), say), then compile "
                "and export it")
        raise ExportError(
            f"{what}: wrap it, inputs = keras.Input(shape); wrapped = keras.Model(inputs, model(inputs)), "
            "then compile and export wrapped (it shares the model's layers and weights)"
        )
    if not inputs:
        raise ExportError(
            "the model has no known inputs; build it with keras.Input "
            "(or an input_shape on its first layer) before sagefit.export"
        )
    return list(inputs)


def _layer_name(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history[0].name if history else None


def _dict_keys(model, which):
    """The keys of a model built on a dict of inputs or outputs ("inputs",
    "outputs"), in the order of model.inputs or model.outputs (the
    framework's own flattening: sorted keys, an OrderedDict's insertion
    order), or None. A dict holding lists or dicts is refused."""
    struct = getattr(model, f"_{which}_struct", getattr(model, f"_nested_{which}", None))
    if not isinstance(struct, dict):
        return None
    if any(isinstance(v, (dict, list, tuple)) for v in struct.values()):
        raise ExportError(
            f"the model's {which} are a dict holding lists or dicts; sagefit names each tensor by "
            f"its key: build the model on a flat dict of tensors (or a list)")
    keys = type(struct)((k, k) for k in struct)
    if hasattr(model, "_compile_loss"):  # Keras 3
        from keras import tree

        return list(tree.flatten(keys))
    import tensorflow as tf

    return list(tf.nest.flatten(keys))


def _output_names(model, keys):
    """The outputs' names: the keys of a model built on a dict of outputs
    (fit takes targets by them), else their layers' names."""
    if keys is not None:
        return keys
    names = [_layer_name(t) for t in model.outputs]
    if all(names) and len(set(names)) == len(names):
        return names
    return [f"output_{i}" for i in range(len(model.outputs))]


def _check_compiled(model):
    if not hasattr(model, "train_step") or not hasattr(model, "get_metrics_result"):
        raise ExportError(f"sagefit.export takes a compiled Keras model, not {type(model).__name__}")
    if getattr(model, "optimizer", None) is None or not getattr(
        model, "compiled", getattr(model, "_is_compiled", False)
    ):
        raise ExportError(
            "the model is not compiled; call model.compile(optimizer=..., "
            "loss=..., metrics=...) before sagefit.export"
        )


def export(
    model,
    export_dir,
    *,
    target_shapes=None,
    target_dtypes=None,
    overwrite=False,
    callbacks=None,
):
    """Write ``model`` (compiled, built) as a sagefit training SavedModel.

    Args:
      model: a compiled Keras model with known inputs.
      export_dir: the directory to create.
      target_shapes: optional per-output shapes of one example's target
        (without the batch dimension); defaults to the output's shape, or
        that shape without its last (class) axis for an output whose own
        loss is sparse (integer class labels: () for an output of shape
        (classes,)).
      target_dtypes: optional per-output dtypes of the targets (default
        float32; losses cast labels themselves).
      overwrite: replace ``export_dir`` if it exists.
      callbacks: the Keras callbacks you would give ``model.fit``; sagefit
        runs EarlyStopping, ReduceLROnPlateau, TerminateOnNaN, CSVLogger,
        ModelCheckpoint(save_best_only=True) and TensorBoard with Keras's
        semantics and refuses any other (see the README).

    Returns the metadata dict written to ``assets.extra/sagefit.json``.

    The export is written beside ``export_dir`` and moved into place when it
    is whole: a refused or failed export leaves what was there as it was.
    """
    import tensorflow as tf

    _check_compiled(model)
    _check_no_strategy(model, tf)
    try:
        export_dir = os.path.expanduser(os.fsdecode(os.fspath(export_dir)))
    except TypeError:
        raise ExportError(f"export_dir is {type(export_dir).__name__}, not a folder's path") from None
    export_dir, replaces = _check_export_dir(export_dir, overwrite)
    if callbacks is not None and not isinstance(callbacks, (list, tuple)):
        # fit takes one callback, or a CallbackList, as well as a list.
        callbacks = list(getattr(callbacks, "callbacks", [callbacks]))
    parent = os.path.dirname(os.path.abspath(export_dir))
    made = []  # the folders above export_dir this export makes, removed again if it fails
    folder = parent
    while not os.path.exists(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    staging = None
    done = False
    # Trace counters as they are (the export's traces advance them), and
    # what each optimizer updates per step, which _export fills.
    counters = [c for o in _optimizers(model) for c in _trace_counters(o)]
    updates = {}
    try:
        try:
            os.makedirs(parent, exist_ok=True)  # as the SavedModel writer makes the folders above
            staging = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(os.path.abspath(export_dir)) + ".tmp-")
        except OSError as e:
            raise ExportError(f"cannot write the export beside {export_dir}: {e.strerror or e}") from None
        written = os.path.join(staging, "model")
        try:
            meta = _export(model, written, tf, target_shapes, target_dtypes, callbacks, updates)
        except ExportError:
            raise
        except (ValueError, TypeError, tf.errors.OpError) as e:
            # TensorFlow's tracing and writing errors run to dozens of lines;
            # the sentence is their first.
            raise ExportError(f"the model's steps could not be traced or saved: {_cause(e)}") from None
        try:
            if replaces:
                shutil.rmtree(export_dir)
            os.rename(written, export_dir)
        except OSError as e:
            raise ExportError(f"cannot put the export in place at {export_dir}: {e.strerror or e}") from None
        done = True
    finally:
        _fresh_trace(updates)  # counters the export's build made: as a fresh fit's step finds them
        for owner, name, value in counters:
            setattr(owner, name, value)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if not done:
            _remove_empty(made)
    return meta


# Python counters an optimizer's update advances each time it is traced,
# once for each variable it updates, and bakes into the traced step, with
# the value its build() gives them: tf-keras's Nadam counts in
# _u_product_counter. A fresh fit builds the optimizer in its step's first
# trace, which tf.function traces again without creating variables: the
# step that runs finds build()'s count plus one per variable updated. Each
# step the export traced after the first baked another count (weights 9e-3
# off fit's after 3 epochs).
_TRACE_COUNTERS = {"_u_product_counter": 1}


def _optimizers(model):
    """The compiled optimizer and the ones a custom step applies itself."""
    optimizer = getattr(model, "optimizer", None)
    return [o for o in [optimizer] + [o for _, o in _other_optimizers(model, optimizer)] if o is not None]


def _trace_counters(optimizer):
    """(owner, name, value) of the optimizer's trace counters (its inner
    optimizer's too), as they are now."""
    owners = [o for o in (optimizer, getattr(optimizer, "inner_optimizer", None)) if o is not None]
    return [(o, name, getattr(o, name)) for o in owners for name in _TRACE_COUNTERS if hasattr(o, name)]


def _fresh_trace(updates):
    """Gives each optimizer's trace counters the values the step a fresh
    fit runs finds (called where the export traces a step that updates);
    updates maps id(optimizer) to (optimizer, the variables it updates per
    step)."""
    for optimizer, n in updates.values():
        for owner, name, _ in _trace_counters(optimizer):
            setattr(owner, name, _TRACE_COUNTERS[name] + n)


def _check_no_strategy(model, tf):
    """Refuses a model built or compiled under a tf.distribute strategy (the
    SageMaker TensorFlow scripts' MirroredStrategy): its variables are the
    strategy's, which a SavedModel of plain steps cannot hold; sagefit
    spreads the job over processes itself."""
    def is_distributed(v):
        inner = [v, getattr(v, "_value", None)]
        if not callable(getattr(v, "value", None)):
            inner.append(getattr(v, "value", None))  # Keras 3 wraps the tf.Variable
        return any(isinstance(x, tf.distribute.DistributedValues) for x in inner if x is not None)

    optimizer = getattr(model, "optimizer", None)
    own = getattr(optimizer, "variables", None)
    own = own() if callable(own) else own  # a method on tf-keras's legacy optimizers
    variables = list(getattr(model, "variables", [])) + list(own or [])
    strategies = [getattr(model, "_distribution_strategy", None), getattr(optimizer, "_distribution_strategy", None)]
    distributed = any(is_distributed(v) for v in variables) or any(
        s is not None and s is not tf.distribute.get_strategy() for s in strategies)
    if tf.distribute.has_strategy() or distributed:
        raise ExportError(
            "the model was built or compiled under a tf.distribute strategy (strategy.scope()), whose "
            "variables a sagefit export cannot hold: build, compile and export it without one; sagefit "
            "spreads the job over hosts and GPUs itself (one process per GPU, all-reducing the "
            "gradients), as MirroredStrategy would")


# The dtypes the runtime reads channel data as (data.ParseDType), text aside.
_TARGET_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                  "uint64", "float16", "float32", "float64")


def _remove_empty(folders):
    """Removes the folders a failed export made, deepest first, each only
    while empty: a refused export leaves the file system as it found it."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return


# What TensorFlow takes as a root name scope, which a saved variable's
# name becomes.
_TF_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")


def _other_optimizers(model, compiled):
    """The optimizers a custom step may apply besides the compiled one, by
    the name that finds them: the model's attributes and its layers' (a
    GAN's discriminator.optimizer), one level into lists and dicts, each
    once."""
    found, seen = [], {id(compiled), id(getattr(compiled, "inner_optimizer", None))}

    def look(owner, prefix):
        attrs = list(vars(owner).items())
        items = list(attrs)  # by their own name first
        for attr, value in attrs:
            if attr.startswith("_"):
                continue  # the framework's own bookkeeping
            if isinstance(value, (list, tuple)):
                items += [(f"{attr}[{i}]", v) for i, v in enumerate(value)]
            elif isinstance(value, dict):
                items += [(f"{attr}[{k!r}]", v) for k, v in value.items()]
        for name, obj in items:
            if _is_optimizer(obj) and id(obj) not in seen:
                seen.add(id(obj))
                found.append((prefix + name, obj))

    look(model, "")
    layers = getattr(model, "_flatten_layers", None)
    for layer in (layers(include_self=False) if layers else getattr(model, "layers", [])):
        look(layer, layer.name + ".")
    return found


def _is_optimizer(obj):
    """Whether obj is a Keras (or tf-keras) optimizer."""
    return any(c.__name__ in ("Optimizer", "BaseOptimizer") and c.__module__.split(".")[0] in ("keras", "tf_keras")
               for c in type(obj).__mro__)


def _check_compile_options(model):
    """Refuses, or names in a warning, what compile() was given that the
    export cannot carry: nothing is dropped without a word."""
    steps = getattr(model, "steps_per_execution", None)
    steps = getattr(model, "_steps_per_execution", steps)
    steps = int(steps.numpy()) if hasattr(steps, "numpy") else steps
    if isinstance(steps, int) and steps > 1:
        warnings.warn(
            f"sagefit: compile(steps_per_execution={steps}) is not carried into the export: sagefit "
            "chooses its own steps per session call (hyperparameter steps_per_execution, default auto); "
            "the numbers are the same either way",
            stacklevel=3,
        )
    if getattr(model, "run_eagerly", False) or getattr(model, "_run_eagerly", False):
        warnings.warn(
            "sagefit: compile(run_eagerly=True) is not carried into the export: sagefit runs the "
            "train and test steps as TensorFlow graphs, without Python",
            stacklevel=3,
        )


def _cause(e):
    """The line of an error that says what is wrong: Keras and TensorFlow
    open theirs with where it happened ("Exception encountered when calling
    Dense.call().", "in user code:", file lines) and close with arguments."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(e).splitlines()]
    for ln in lines:
        if ln and not ln.startswith(("Exception encountered when calling", "in user code", "File ",
                                     "Arguments received by", "•", "return ", "raise ")):
            return ln
    return type(e).__name__


def _check_export_dir(export_dir, overwrite):
    """Refuses a place export cannot write or must not replace; returns the
    folder, normalised ("model/" is the folder "model", a link too), and
    whether an earlier export (or an empty folder) is there to replace."""
    if "://" in export_dir:
        raise ExportError(
            f"export_dir {export_dir} is not a local folder: export to one, then upload it "
            "(aws s3 cp --recursive, or the SageMaker SDK's S3Uploader)"
        )
    export_dir = os.path.normpath(export_dir)
    if not os.path.lexists(export_dir):
        return export_dir, False
    if not overwrite:
        raise ExportError(f"{export_dir} exists; pass overwrite=True")
    if os.path.islink(export_dir):
        raise ExportError(f"{export_dir} is a link; overwrite=True replaces an earlier export's folder only: give the folder itself")
    if not os.path.isdir(export_dir):
        raise ExportError(f"{export_dir} is not a folder; overwrite=True replaces an earlier export only")
    here = os.path.realpath(os.getcwd())
    target = os.path.realpath(export_dir)
    if here == target or here.startswith(target + os.sep):
        raise ExportError(f"{export_dir} is the current folder or holds it; export to a folder of its own")
    entries = os.listdir(export_dir)
    if entries and not _is_export(export_dir):
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise ExportError(
            f"{export_dir} holds files that are not a sagefit export ({shown}); overwrite=True "
            "replaces an earlier export only: export to a new or empty folder"
        )
    return export_dir, True


def _is_export(path):
    """Whether path holds a sagefit training SavedModel (its metadata)."""
    try:
        with open(os.path.join(path, contract.EXTRA_DIR, contract.METADATA_FILE)) as f:
            return json.load(f).get("format") == contract.FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _export(model, export_dir, tf, target_shapes, target_dtypes, callbacks, updates):
    """export's work, into export_dir (a path that does not exist yet)."""
    keras = _keras_for(model)
    optimizer = getattr(model, "optimizer", None)
    legacy = getattr(optimizer, "inner_optimizer", optimizer)
    base = next((c for c in type(legacy).__mro__ if ".optimizers.legacy" in c.__module__), None)
    if legacy is not None and base is not None:
        # They have no build() and a step of their own; the current ones
        # of the same name train alike.
        use = (f"tf_keras.optimizers.{base.__name__}, the current one"
               if hasattr(keras.optimizers, base.__name__) else "an optimizer of tf_keras.optimizers")
        raise ExportError(
            f"optimizer {type(legacy).__name__} is one of tf-keras's legacy optimizers "
            f"({base.__module__}.{base.__name__}), which sagefit does not export: compile with {use}")
    stateful = [layer.name for layer in _layers(model) if getattr(layer, "stateful", False) is True]
    if stateful:
        raise ExportError(
            f"layer {stateful[0]} is stateful (an RNN carrying its state from batch to batch, over a fixed "
            "batch size): sagefit's steps take batches of the job's batch_size and an epoch's last, partial "
            "batch, and its processes each a share of the batch; build it with stateful=False")
    inputs = _input_tensors(model)
    out_keys = _dict_keys(model, "outputs")
    out_names = _output_names(model, out_keys)
    taken = set()
    in_descs = []
    in_keys = _dict_keys(model, "inputs")
    for t in inputs:
        name = in_keys[len(in_descs)] if in_keys else _layer_name(t) or f"input_{len(in_descs)}"
        if getattr(t, "sparse", False) or getattr(t, "ragged", False):
            warnings.warn(
                f"sagefit: input {name} is {'sparse' if getattr(t, 'sparse', False) else 'ragged'} in Keras; "
                "sagefit feeds it dense, from a .npy array of fixed shape per row",
                stacklevel=3,
            )
        # A batch size the model was built with (build((32, 3)), a call on a
        # batch, keras.Input(batch_size=...)) does not bind fit, nor the
        # steps: they take the job's batches and a last, partial one.
        shape = (None,) + tuple(t.shape)[1:]
        in_descs.append(_tensor_desc(name, _spec_name(name, taken), shape, t.dtype))

    sparse = _sparse_outputs(model, out_names)
    tgt_descs = []
    # compile(loss=None): the model's own losses (add_loss) train it, and
    # fit takes no targets (fit(x)); neither does the export.
    targetless = _without_compiled_loss(model)
    if targetless and (target_shapes is not None or target_dtypes is not None):
        raise ExportError(
            "target_shapes or target_dtypes were given, but the model was compiled without a loss "
            "(loss=None) and trains on what its layers add: it takes no targets, as fit(x)")
    for i, name in enumerate([] if targetless else out_names):
        out_shape = tuple(model.outputs[i].shape)
        if target_shapes is not None:
            given = _per_output(target_shapes, i, name, out_names, "target_shapes")
            shape = (None,) + _example_shape(given, name)
        elif sparse[i]:  # a class id per row, or per pixel or time step: the output without its class axis
            shape = out_shape[:-1] if len(out_shape) >= 2 else (None,)
        else:
            shape = out_shape
        dtype = "float32"
        if target_dtypes is not None:
            dtype = _per_output(target_dtypes, i, name, out_names, "target_dtypes")
            try:
                as_tf = tf.as_dtype(dtype)
            except TypeError:
                raise ExportError(f"target_dtypes: {dtype!r} (output {name}) is not a TensorFlow dtype, such as \"float32\" or \"int64\"") from None
            if as_tf == tf.string:
                raise ExportError(
                    f"target_dtypes: {dtype!r} (output {name}): a target is numbers, which the loss "
                    "compares with the output; turn text labels into class ids (a StringLookup over "
                    "the labels, in numpy) and give \"int64\""
                )
            if as_tf.name not in _TARGET_DTYPES:
                raise ExportError(
                    f"target_dtypes: {dtype!r} (output {name}): sagefit reads targets as "
                    f"{', '.join(_TARGET_DTYPES)}; give one of those (the loss casts it)"
                )
        tgt_descs.append(
            _tensor_desc(name, _spec_name("target_" + name, taken), shape, dtype)
        )

    # The runtime reads a fixed shape per example (.npy arrays have one);
    # refused here, not at the job's start.
    for kind, descs, fix in (
        ("input", in_descs, "build it on keras.Input of a fixed shape (pad sequences to one length, as "
                            "the .npy array holds them)"),
        ("target", tgt_descs, "give target_shapes"),
    ):
        for d in descs:
            if any(dim is None for dim in d["shape"][1:]):
                shape = "(" + ", ".join("None" if x is None else str(x) for x in d["shape"]) + ")"
                raise ExportError(
                    f"{kind} {d['name']} has shape {shape}, unknown beyond the batch; sagefit reads a "
                    f"fixed shape per example: {fix}")

    in_specs = [
        tf.TensorSpec(d["shape"], d["dtype"], name=d["key"]) for d in in_descs
    ]
    tgt_specs = [
        tf.TensorSpec(d["shape"], d["dtype"], name=d["key"]) for d in tgt_descs
    ]
    n_in = len(in_specs)

    def pack(tensors, keys):
        # Keras takes a dict for a model built on one, else a single tensor
        # for one input (or target), a list for several.
        if keys is not None:
            return dict(zip(keys, tensors))
        return tensors[0] if len(tensors) == 1 else list(tensors)

    _build(model, pack([_zeros(d) for d in in_descs], in_keys),
           pack([_zeros(d) for d in tgt_descs], out_keys) if tgt_descs else None)
    # Given target_shapes or target_dtypes, the step takes targets: any
    # failure of it on them is reported as it is.
    inputs_alone = tgt_descs and target_shapes is None and target_dtypes is None and _custom_step_reads_inputs_alone(
        model, in_specs, in_specs + tgt_specs,
        lambda args: _fit_data(pack(args[:n_in], in_keys),
                               pack(args[n_in:], out_keys) if len(args) > n_in else None))
    if inputs_alone:
        warnings.warn(
            "sagefit: the model's own train_step (compiled without a loss) takes the batch's inputs alone, as "
            f"fit(x) hands them: on inputs and targets it failed ({inputs_alone.rstrip('.')}), so the job reads no target "
            "files; if the step reads targets, give export target_shapes (and target_dtypes) for them",
            stacklevel=3)
        targetless, tgt_descs, tgt_specs = True, [], []
    # After the build: "auto" modes read the compiled metrics' directions.
    callback_specs = [_callback_spec(cb, model) for cb in (callbacks or [])]
    _check_compile_options(model)
    for v in _metric_variables(model):
        if not _TF_NAME.fullmatch(_var_name(v)):
            raise ExportError(
                f"metric variable {_var_name(v)!r} cannot be saved: TensorFlow's names take letters, "
                "digits and _ . - / only; rename the metric "
                f"{_var_name(v).split('/')[0]!r} (its name= argument)"
            )

    trainable = list(model.trainable_variables)
    for v in trainable:
        if _dtype_name(v.dtype) != "float32":
            raise ExportError(
                f"trainable variable {_var_name(v)} is {_dtype_name(v.dtype)}; "
                "sagefit all-reduces float32 gradients only"
            )
    if not trainable:
        raise ExportError("the model has no trainable variables")
    optimizer = model.optimizer
    opt_vars = optimizer.variables
    opt_vars = opt_vars() if callable(opt_vars) else opt_vars
    state_vars = list(model.variables) + [
        v for v in opt_vars if not _same_var(v, model.variables)
    ]
    metric_vars = _metric_variables(model)

    def to_dense(g):
        if isinstance(g, tf.IndexedSlices):
            g = tf.convert_to_tensor(g)
        return tf.reshape(tf.cast(g, tf.float32), [-1])

    def metric_dict(logs):
        # A custom step returning {m.name: m.result() for m in self.metrics}
        # nests the compiled metrics' dict; Keras's logs flatten it.
        out = {}
        for k, v in logs.items():
            if isinstance(v, dict):
                out.update(metric_dict(v))
            else:
                out[str(k)] = tf.cast(tf.convert_to_tensor(v), tf.float32)
        return out

    # jit_compile=True: fit runs the train step XLA-compiled; so does each
    # step signature here (train_steps' whole loop as one program). fit
    # takes any true value (1, np.True_) as True: so does the export.
    jit = bool(getattr(model, "jit_compile", False))

    def xla(fn):
        if not jit:
            return fn
        compiled = tf.function(fn, jit_compile=True, autograph=False)
        return lambda *args: compiled(*args)

    archive = keras.export.ExportArchive()
    # Variables are tracked through the endpoints, lookup tables
    # (StringLookup, IntegerLookup, TextVectorization's) only when given.
    # Not the whole model: its variables would be saved twice, and a
    # Python loader would serve with the second, untrained, copies.
    for table in _lookup_tables(model):
        archive.track(table)

    # Keras's own train step: loss, optimizer update and metrics as in fit.
    n_tgt = len(tgt_descs)

    def step_data(args):
        """(x, y) or, with a sample weight after the targets, (x, y, w);
        for a model without targets, x as fit(x) hands it (_fit_data)."""
        x = pack(args[:n_in], in_keys)
        if n_tgt == 0:
            return _fit_data(x)
        y = pack(args[n_in : n_in + n_tgt], out_keys)
        w = args[n_in + n_tgt :]
        if len(w) > 1:  # one per output, in y's structure, as fit takes them
            return _fit_data(x, y, pack(w, out_keys))
        return _fit_data(x, y, w[0] if w else None)

    def train_step(*args):
        _fresh_trace(updates)
        return metric_dict(model.train_step(step_data(args)))

    # The variables the step hands the optimizer, in the order it hands
    # them (all trainable variables for Keras's own step; a custom step may
    # update fewer): known once the step's gradients are traced.
    applied = []

    # The step with the optimizer call intercepted: its logs and the
    # gradients Keras would apply, as Keras hands them (IndexedSlices stay
    # sparse); nothing is applied. Keras's own step calls
    # optimizer.apply_gradients(zip(grads, vars)); the Keras 3 guide's
    # custom step calls optimizer.apply(grads, vars). Traced once, called by
    # compute_gradients and, for a large model, by the train step.
    # Optimizers of the model's own besides model.optimizer, which a custom
    # step may apply itself (a GAN's second one): their updates use this
    # process's gradient, so on several processes their variables would
    # drift apart. Named in the metadata, for the runtime to refuse that.
    others = _other_optimizers(model, optimizer)
    local_optimizers = set()
    # Per variable of applied: its gradient is sparse (an Embedding's rows),
    # which several processes gather as rows (compute_sparse_gradients).
    sparse_flags = []
    untrained = []  # variables without a gradient, by name
    # Where the optimizer scales the loss (mixed_float16's
    # LossScaleOptimizer), each process's backward pass runs on its share of
    # the global batch's loss (1/processes, which the runtime sets), as
    # MultiWorkerMirroredStrategy divides each replica's loss: a float16
    # backward pass then overflows at the scale one process's overflows at,
    # not at one N times lower. One process multiplies by 1, which changes
    # no bit. Set when the traced step scaled its loss.
    scale_method = _loss_scaling(optimizer)
    loss_share = tf.Variable(1.0, trainable=False, name="sagefit_loss_share") if scale_method else None
    shared = []

    @tf.function(autograph=False)
    def step_gradients(*args):
        captured, calls = [], []
        wrapped = []  # (optimizer, method) shadowed on the instance, to undo

        def capture_pairs(grads_and_vars, *a, **k):
            calls.append("apply_gradients")
            captured.extend(grads_and_vars)
            return tf.constant(0, tf.int64)

        def capture_apply(grads, trainable_variables=None, *a, **k):
            calls.append("apply")
            tvars = model.trainable_variables if trainable_variables is None else trainable_variables
            captured.extend(zip(grads, tvars))
            return tf.constant(0, tf.int64)

        # Shadow the methods while tracing: the compiled optimizer's
        # captured, the others' counted and run (tf-keras's have no apply).
        optimizer.apply_gradients, optimizer.apply = capture_pairs, capture_apply
        try:
            if scale_method:
                scale = getattr(optimizer, scale_method)

                def share_then_scale(loss, *a, **k):
                    shared.append(scale_method)
                    if callable(loss):  # tf-keras's minimize takes a function of no arguments
                        given = loss

                        def loss():
                            value = given()
                            return value * tf.cast(loss_share, value.dtype)

                        return scale(loss, *a, **k)
                    return scale(loss * tf.cast(loss_share, loss.dtype), *a, **k)

                setattr(optimizer, scale_method, share_then_scale)
                wrapped.append((optimizer, scale_method))
            for name, other in others:
                for method in ("apply", "apply_gradients"):
                    fn = getattr(other, method, None)
                    if fn is None:
                        continue

                    def counted(*a, _fn=fn, _name=name, _opt=other, _method=method, **k):
                        local_optimizers.add(_name)
                        # The variables it updates: gradients that are not None,
                        # given first or by name (a zip of pairs is read once).
                        key = "grads" if _method == "apply" else "grads_and_vars"
                        given = None
                        if a:
                            a = (list(a[0]),) + a[1:]
                            given = a[0]
                        elif key in k:
                            k[key] = given = list(k[key])
                        if given is not None:
                            grads = given if _method == "apply" else [g for g, _ in given]
                            updates[id(_opt)] = (_opt, sum(g is not None for g in grads))
                        return _fn(*a, **k)

                    setattr(other, method, counted)
                    wrapped.append((other, method))
            logs = model.train_step(step_data(args))
        finally:
            del optimizer.apply_gradients
            del optimizer.apply
            for other, method in wrapped:
                delattr(other, method)
        _check_applied(calls, captured, trainable)
        # A variable the loss gives no gradient (a head without a loss) is
        # left out of the update, as Keras's optimizer leaves it (with a
        # warning) in fit: it is not trained, nor in the all-reduce.
        untrained[:] = [_var_name(v) for g, v in captured if g is None]
        captured = [(g, v) for g, v in captured if g is not None]
        if not captured:
            raise ExportError(
                "no trainable variable gets a gradient from the loss (fit fails the same way: "
                "\"No gradients provided for any variable\"); compile the model with a loss "
                "that depends on its outputs"
            )
        applied[:] = [v for _, v in captured]
        updates[id(optimizer)] = (optimizer, len(applied))
        sparse_flags[:] = [isinstance(g, tf.IndexedSlices) for g, _ in captured]
        return metric_dict(logs), [g for g, _ in captured]

    # The optimizer's update with those gradients, as the step makes it.
    @tf.function(autograph=False)
    def apply_update(grads):
        _fresh_trace(updates)
        optimizer.apply_gradients(zip(grads, applied))
        return tf.identity(optimizer.iterations)

    # Keras's own step, as the two traced parts in its order (the update
    # after the gradients, as their variables order them; the step's
    # metrics read its predictions only): for a large model, it saves
    # tracing Keras's step a second time (seconds for MobileNetV2; nested
    # calls are inlined when TensorFlow instantiates the step, so the graph
    # that runs is the same). A custom step may read variables after its
    # update: it is traced whole.
    def train_step_from_parts(*args):
        logs, grads = step_gradients(*args)
        apply_update(grads)
        return logs

    # compute_gradients: the gradients fused into one buffer, for the
    # all-reduce.
    def compute_gradients(*args):
        logs, grads = step_gradients(*args)
        out = dict(logs)
        out[contract.GRADIENTS] = tf.concat([to_dense(g) for g in grads], axis=0)
        return out

    def apply_gradients(flat):
        grads, offset = [], 0
        for v in applied:
            n = _num_elements(v)
            grads.append(tf.reshape(flat[offset : offset + n], v.shape))
            offset += n
        return {contract.ITERATIONS: apply_update(grads)}

    # Several processes with sparse gradients (an Embedding's rows): each
    # gives the rows it looked up as they come (indices, values, and per
    # variable their count), which the runtime gathers from every process
    # in process order, the rows one process with the whole batch looks up,
    # in its order: Keras's optimizers apply them row by row (Adam's second
    # moment adds each lookup's square, not the square of their sum), so a
    # dense sum of them is off one process's numbers. The dense gradients
    # of the other variables are fused as compute_gradients fuses them.
    def compute_sparse_gradients(*args):
        logs, grads = step_gradients(*args)
        out = dict(logs)
        dense = [to_dense(g) for g, sparse in zip(grads, sparse_flags) if not sparse]
        rows = [g for g, sparse in zip(grads, sparse_flags) if sparse]
        out[contract.GRADIENTS] = tf.concat(dense, axis=0) if dense else tf.zeros([0], tf.float32)
        out[contract.SPARSE_INDICES] = tf.concat([tf.cast(g.indices, tf.int64) for g in rows], axis=0)
        out[contract.SPARSE_VALUES] = tf.concat([tf.reshape(tf.cast(g.values, tf.float32), [-1]) for g in rows], axis=0)
        out[contract.SPARSE_COUNTS] = tf.stack([tf.shape(g.indices, out_type=tf.int64)[0] for g in rows])
        return out

    def apply_sparse_gradients(flat, indices, values, counts):
        grads, offset, at, value_at, j = [], 0, 0, 0, 0
        for v, sparse in zip(applied, sparse_flags):
            if not sparse:
                n = _num_elements(v)
                grads.append(tf.reshape(flat[offset : offset + n], v.shape))
                offset += n
                continue
            shape = [int(d) for d in v.shape]
            row = _num_elements(v) // shape[0]
            k = counts[j]
            grads.append(tf.IndexedSlices(
                tf.reshape(values[value_at : value_at + k * row], [-1] + shape[1:]),
                indices[at : at + k], dense_shape=tf.constant(shape, tf.int64)))
            at, value_at, j = at + k, value_at + k * row, j + 1
        return {contract.ITERATIONS: apply_update(grads)}

    def test_step(*args):
        return metric_dict(model.test_step(step_data(args)))

    @tf.function(input_signature=[], autograph=False)
    def reset_metrics():
        for m in model.metrics:
            m.reset_state()
        return {contract.OK: tf.constant(1, tf.int32)}

    @tf.function(input_signature=[], autograph=False)
    def metric_results():
        return metric_dict(model.get_metrics_result())

    @tf.function(input_signature=[], autograph=False)
    def metric_state():
        parts = [tf.reshape(tf.cast(_read(v), tf.float64), [-1]) for v in metric_vars]
        return {contract.STATE: tf.concat(parts, axis=0) if parts else tf.zeros([0], tf.float64)}

    def assign_metric_state(state):
        offset = 0
        for v in metric_vars:
            n = _num_elements(v)
            v.assign(tf.cast(tf.reshape(state[offset : offset + n], v.shape), v.dtype))
            offset += n
        return {contract.OK: tf.constant(1, tf.int32)}

    var_keys = [f"v{i:04d}" for i in range(len(state_vars))]

    @tf.function(input_signature=[], autograph=False)
    def read_variables():
        return {k: tf.identity(_read(v)) for k, v in zip(var_keys, state_vars)}

    def assign_variables(*values):
        for v, value in zip(state_vars, values):
            v.assign(value)
        return {contract.OK: tf.constant(1, tf.int32)}

    lr_var = _learning_rate_variable(optimizer)

    inner = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = getattr(inner, "_learning_rate", None)
    legacy_schedule = _is_legacy_keras(model) and isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)

    @tf.function(input_signature=[], autograph=False)
    def get_learning_rate():
        lr = optimizer.learning_rate
        if legacy_schedule:
            # tf-keras's property is the rate its last step used; the rate
            # in force now (Keras 3's property, what tf-keras's TensorBoard
            # writes) is the schedule's at the steps so far.
            lr = schedule(inner.iterations)
        return {contract.LEARNING_RATE: tf.cast(tf.convert_to_tensor(lr), tf.float32)}

    def set_learning_rate(lr):
        lr_var.assign(tf.cast(lr, lr_var.dtype))
        return {contract.LEARNING_RATE: tf.cast(tf.identity(_read(lr_var)), tf.float32)}

    def serve(*args):
        x = pack(args, in_keys)
        y = model(x, training=False)
        ys = y if isinstance(y, (list, tuple)) else [y]
        if isinstance(y, dict):
            ys = [y[n] for n in out_names]
        return {n: t for n, t in zip(out_names, ys)}

    serving_specs = [
        tf.TensorSpec(d["shape"], d["dtype"], name=d["key"]) for d in in_descs
    ]
    # serving_default first: ExportArchive aliases the first endpoint too.
    def add(*args):
        with _saving():  # a traced function's traces are listed as it is added
            return archive.add_endpoint(*args)

    add(contract.SERVING, serve, serving_specs)
    # One weight per row; a model with several outputs takes one per output
    # (sample_weight_<output>), which a single file fills alike (as fit
    # applies one array to every output).
    weight_descs = [{"name": contract.SAMPLE_WEIGHT, "key": contract.SAMPLE_WEIGHT}]
    if n_tgt > 1:
        weight_descs = [
            {"name": f"{contract.SAMPLE_WEIGHT}_{d['name']}", "output": d["name"],
             "key": _spec_name(f"{contract.SAMPLE_WEIGHT}_{d['name']}", taken)}
            for d in tgt_descs
        ]
    for d in weight_descs:
        d.update(dtype="float32", shape=[None])

    def weight_specs():
        return [tf.TensorSpec(d["shape"], tf.float32, name=d["key"]) for d in weight_descs]

    weight_spec = weight_specs()
    # Keras's own test step on a model compiled without a loss whose
    # train_step computes its own has no loss to compute ("No loss to
    # compute"): fit trains such a model without validation data and fails
    # with it. Exported without a test step, and a job that validates is
    # refused. A test step of the model's own that fails is the model's
    # error: the export fails, as before.
    test_refused = None
    if _no_compiled_loss(model) and "test_step" not in _own_steps(model):
        test_refused = _trace_failure(test_step, in_specs + tgt_specs)
        if test_refused:
            test_refused = _trace_failure(test_step, in_specs + tgt_specs + weight_spec) and test_refused
    weighted = _takes_sample_weights(model, train_step, None if test_refused else test_step,
                                     in_specs + tgt_specs + weight_spec)
    # A loss of one value per element (per pixel, per time step) takes no
    # weight per row: Keras's steps fail on one. It takes weights of the
    # values' shape, as fit does; where sagefit cannot feed those (several
    # outputs, elements per row not fixed), its steps are exported
    # unweighted, as fit runs them without sample_weight.
    unweighted_why = None
    per_element = None
    if weighted and targetless:
        unweighted_why = ("the model was compiled without a loss (loss=None) and trains on "
                          + ("its inputs alone in its own train_step, as fit(x) runs it, with no sample weight"
                             if "train_step" in _own_steps(model) else
                             "the losses its layers add, which no sample weight weighs"))
        weighted = False
    elif weighted:
        per_element = _per_element_loss(model, tgt_specs, out_names)
    if per_element and n_tgt == 1 and None not in per_element[1]:
        # Weights of the values' shape, as fit takes them for such a loss.
        weight_descs[0]["shape"] = [None] + list(per_element[1])
        weight_spec = weight_specs()
    elif per_element:
        unweighted_why = (
            f"the loss of output {per_element[0]!r} is one value per element of shape {per_element[1]} "
            "(per pixel or time step), which a weight per row does not fit; sagefit weighs such a loss "
            "by a sample_weight.npy of its shape in a model of one output whose elements per row are fixed")
        weighted = False
    # A model whose steps take weights has them in their weighted form only:
    # the runtime feeds weights of one to a batch without, which gives
    # fit's numbers to the bit (what fit(sample_weight=ones) gives), and
    # each step is traced once.
    step_specs = in_specs + tgt_specs + (weight_spec if weighted else [])
    names = (
        (contract.TRAIN_STEP_WEIGHTED, contract.COMPUTE_GRADIENTS_WEIGHTED, contract.TEST_STEP_WEIGHTED)
        if weighted else (contract.TRAIN_STEP, contract.COMPUTE_GRADIENTS, contract.TEST_STEP)
    )
    add(names[1], xla(compute_gradients), step_specs)
    with _saving():  # fills applied
        gradients_trace = _endpoint(archive, names[1]).get_concrete_function()
    if untrained:
        warnings.warn(
            f"sagefit: variables {', '.join(untrained)} get no gradient from the loss and will not "
            "be trained (fit leaves them as they are too, with the same warning); freeze them "
            "(trainable=False) or give their output a loss", stacklevel=3)
    # A large step (see LARGE_STEP_OPS) is not traced again where a
    # traced one can be called: Keras's own step is built from the traced
    # gradients and update, and train_steps' loop calls the train step.
    large = _graph_ops(gradients_trace.graph) >= LARGE_STEP_OPS
    own_step = type(model).train_step is keras.Model.train_step
    add(names[0], xla(train_step_from_parts if large and own_step else train_step), step_specs)
    grad_size = int(sum(_num_elements(v) for v in applied))
    add(
        contract.APPLY_GRADIENTS,
        xla(apply_gradients),
        [tf.TensorSpec([grad_size], tf.float32, name=contract.GRADIENTS)],
    )
    if test_refused:
        warnings.warn(
            f"sagefit: the model's test step cannot be traced ({test_refused.rstrip('.')}): the model trains as fit trains "
            "it without validation data, and a job given validation data is refused, as fit fails on it; "
            "give the model a test_step that computes its loss to validate", stacklevel=3)
        names = names[:2]
    else:
        add(names[2], xla(test_step), step_specs)
    # State a custom step keeps of its own (a tf.Variable Keras does not
    # track): read and assigned with the model's, so checkpoints, resumes
    # and a move to another session carry it.
    own_state = len(state_vars)
    state_vars.extend(_captured_untracked(
        [_endpoint(archive, n) for n in names], state_vars + metric_vars + ([loss_share] if loss_share is not None else [])))
    var_keys.extend(f"v{i:04d}" for i in range(len(var_keys), len(state_vars)))
    if not shared:  # a custom step that does not scale its loss through the optimizer
        loss_share = None

    # Several hosts: the averaged gradient of step t applied and step t+1's
    # gradient computed in one call (the update first: its writes are
    # ordered before the step's reads), so a step costs one call and the
    # all-reduce. It calls the two traced endpoints rather than tracing the
    # step again (seconds for a large model, and its graph saved twice).
    apply_fn, compute_fn = _endpoint(archive, contract.APPLY_GRADIENTS), _endpoint(archive, names[1])

    def apply_compute_gradients(flat, *args):
        apply_fn(flat)
        return compute_fn(*args)

    add(
        contract.APPLY_COMPUTE_GRADIENTS,
        apply_compute_gradients,
        [tf.TensorSpec([grad_size], tf.float32, name=contract.GRADIENTS)] + step_specs,
    )
    if any(sparse_flags):
        dense_size = int(sum(_num_elements(v) for v, sparse in zip(applied, sparse_flags) if not sparse))
        # Not XLA-compiled: the rows' count is known only when they come.
        add(contract.COMPUTE_SPARSE_GRADIENTS, compute_sparse_gradients, step_specs)
        add(contract.APPLY_SPARSE_GRADIENTS, apply_sparse_gradients, [
            tf.TensorSpec([dense_size], tf.float32, name=contract.GRADIENTS),
            tf.TensorSpec([None], tf.int64, name=contract.SPARSE_INDICES),
            tf.TensorSpec([None], tf.float32, name=contract.SPARSE_VALUES),
            tf.TensorSpec([sum(sparse_flags)], tf.int64, name=contract.SPARSE_COUNTS),
        ])
    # Several steps per call, where the step's logs are the model's metrics
    # (a custom step may log something else: one step per call then).
    metric_names = _metric_names(model.get_metrics_result())
    train_step_fn = _endpoint(archive, names[0])
    with _saving():
        traced = train_step_fn.get_concrete_function()
    train_logs = _step_logs("train_step", traced.structured_outputs, metric_names)
    test_logs = None
    if not test_refused:
        with _saving():
            test_logs = _step_logs("test_step", _endpoint(archive, names[2]).get_concrete_function().structured_outputs, metric_names)
    # Before anything is written: ops the job cannot run, ops it must know.
    python_ops, random_ops = _ops_of(train_step_fn, _PYTHON_OPS, _STATEFUL_RANDOM_OPS)
    for n in names[1:]:
        python_ops += _ops_of(_endpoint(archive, n), _PYTHON_OPS)[0]
    if python_ops:
        raise ExportError(
            f"the train or test step runs Python (tf.py_function or tf.numpy_function: {', '.join(list(dict.fromkeys(python_ops))[:3])}), "
            "which sagefit's job, a process without Python, cannot run: write it with TensorFlow ops, "
            "or do it in numpy before saving the data")
    looped = [n for n in random_ops if "/while/" in n]
    if looped and _is_legacy_keras(model):
        warnings.warn(f"sagefit: {_LOOPED_RANDOM_WARNING.format(looped[0])}", stacklevel=3)
    train_steps = None
    if train_logs is None and set(metric_names) <= set(traced.structured_outputs):
        train_steps = _train_steps(model, step_data, metric_dict, metric_names, updates,
                                   train_step_fn if large else None)
        stacked = [tf.TensorSpec([None] + list(sp.shape), sp.dtype, name=sp.name) for sp in step_specs]
        add(contract.TRAIN_STEPS, xla(train_steps), stacked)
    # fit ends, once its epochs are run, with the optimizer's
    # finalize_variable_values (use_ema: the moving averages become the
    # weights); the runtime calls this where fit calls that.
    finalizes = bool(getattr(optimizer, "use_ema", False)
                     or getattr(getattr(optimizer, "inner_optimizer", None), "use_ema", False))
    if finalizes:
        @tf.function(input_signature=[], autograph=False)
        def finalize_variables():
            optimizer.finalize_variable_values(model.trainable_variables)
            return {contract.OK: tf.constant(1, tf.int32)}

        add(contract.FINALIZE_VARIABLES, _traced(finalize_variables))
    add(contract.RESET_METRICS, _traced(reset_metrics))
    add(contract.METRIC_RESULTS, _traced(metric_results))
    add(contract.METRIC_STATE, _traced(metric_state))
    state_size = int(sum(_num_elements(v) for v in metric_vars))
    add(
        contract.ASSIGN_METRIC_STATE,
        assign_metric_state,
        [tf.TensorSpec([state_size], tf.float64, name=contract.STATE)],
    )
    add(contract.READ_VARIABLES, _traced(read_variables))
    add(
        contract.ASSIGN_VARIABLES,
        assign_variables,
        [
            tf.TensorSpec(v.shape, v.dtype, name=k)
            for k, v in zip(var_keys, state_vars)
        ],
    )
    add(contract.GET_LEARNING_RATE, _traced(get_learning_rate))
    if lr_var is not None:
        add(
            contract.SET_LEARNING_RATE,
            set_learning_rate,
            [tf.TensorSpec([], tf.float32, name=contract.LEARNING_RATE)],
        )
    if loss_share is not None:
        def set_loss_share(share):
            loss_share.assign(share)
            return {contract.LOSS_SHARE: tf.identity(_read(loss_share))}

        add(contract.SET_LOSS_SHARE, set_loss_share, [tf.TensorSpec([], tf.float32, name=contract.LOSS_SHARE)])
    # Lookup tables the steps use that Keras does not track (a custom step's
    # own tf.lookup table): tracked, so the SavedModel holds them.
    tables = _captured_tables([_endpoint(archive, n) for n in getattr(archive, "_endpoint_names", names)])
    for table in tables:
        archive.track(table)
    try:
        _write_out(archive, export_dir)
    except AssertionError as e:  # TensorFlow's word for a capture it cannot save
        if "'untracked' resource" not in str(e):
            raise
        shutil.rmtree(export_dir, ignore_errors=True)
        raise ExportError(
            f"the model's steps use a TensorFlow object that a SavedModel cannot hold ({_untracked_object(e)}); "
            "sagefit exports the variables and tf.lookup tables they use: make the object inside the step, "
            "or leave it out (a summary writer: sagefit writes TensorBoard logs with the TensorBoard callback)"
        ) from None

    assigned = _assigned_by(_endpoint(archive, names[0]), state_vars)
    # Written by a train or a test step (validation runs the test step).
    written = [_written_by(_endpoint(archive, n), tables, _TABLE_WRITE_OPS) for n in names]
    written_tables = [_table_name(t) for t, *w in zip(tables, *written) if any(w)]
    if written_tables:
        warnings.warn(f"sagefit: {_WRITTEN_TABLES_WARNING.format(', '.join(written_tables))}", stacklevel=3)

    def _kind(i, v):
        # tf-keras's optimizer keeps its learning rate out of its variables.
        if i < len(model.variables):
            return contract.KIND_MODEL
        if i < own_state or (lr_var is not None and _handle(v) is _handle(lr_var)):
            return contract.KIND_OPTIMIZER
        return contract.KIND_STEP

    variables = [
        {
            "name": _var_name(v),
            "key": k,
            "shape": [int(d) for d in v.shape],
            "dtype": _dtype_name(v.dtype),
            "kind": _kind(i, v),
            "trainable": any(v is t for t in trainable),
        }
        for i, (k, v) in enumerate(zip(var_keys, state_vars))
    ]
    weights = list(model.weights)
    for i, (desc, v) in enumerate(zip(variables, state_vars)):
        # A step's own variables follow the rule of the model's (tf-keras
        # tracks them as the model's).
        if (i < len(model.variables) or i >= own_state) and _averaged_over_hosts(v, desc, assigned[i]):
            desc["aggregation"] = contract.MEAN
        # The model's variables that are not its weights (a random layer's
        # seed state): get_weights and set_weights leave them out, so
        # EarlyStopping's restore_best_weights does not restore them.
        if i < len(model.variables) and not _same_var(v, weights):
            desc["not_weight"] = True
    grads = [
        {"name": _var_name(v), "shape": [int(d) for d in v.shape], "dtype": "float32"}
        for v in applied
    ]
    metrics = _metric_names(model.get_metrics_result())
    meta = {
        "format": contract.FORMAT,
        "contract_version": contract.VERSION,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "legacy_keras": _is_legacy_keras(model),
        "inputs": in_descs,
        "targets": tgt_descs,
        "outputs": out_names,
        "signatures": contract.signature_names(lr_var is not None, weighted, train_steps is not None, finalizes,
                                               test_step=not test_refused, loss_share=loss_share is not None,
                                               sparse=any(sparse_flags)),
        "jit_compile": jit,
        "sample_weights": weight_descs if weighted else [],
        "sample_weights_refused": unweighted_why,
        "test_step_refused": test_refused,
        "gradients": grads,
        "gradient_size": grad_size,
        "variables": variables,
        "metrics": metrics,
        "metric_state_size": state_size,
        "learning_rate_assignable": lr_var is not None,
        "optimizer": type(optimizer).__name__,
        "callbacks": callback_specs,
        "written_tables": written_tables,
        "local_optimizers": sorted(local_optimizers),
        "synchronized_batch_norm": [
            layer.name for layer in _layers(model)
            if "BatchNormalization" in type(layer).__name__
            and getattr(layer, "synchronized", False)
        ],
    }
    # Written only where they hold something: an older runtime names a key
    # it does not read in a warning, as something asked for and not done.
    own = _own_metrics(model)
    if own:
        meta["own_metrics"] = own
    if train_logs is not None:
        meta["train_logs"] = train_logs
    if test_logs is not None:
        meta["test_logs"] = test_logs
    reductions = _loss_reductions(model, out_names)
    if reductions:
        meta["loss_reductions"] = reductions
    as_given = _labels_as_given(model, out_names)
    if as_given:
        meta["labels_as_given"] = as_given
    if untrained:
        meta["untrained_variables"] = list(untrained)
    if any(sparse_flags):
        meta["sparse_gradients"] = [_var_name(v) for v, sparse in zip(applied, sparse_flags) if sparse]
        # By place as well: two variables may share a name (one layer name
        # in two sub-models), one of them sparse.
        meta["sparse_gradient_indexes"] = [i for i, sparse in enumerate(sparse_flags) if sparse]
    factor = _static_loss_scale(optimizer)
    if factor is not None:
        meta["loss_scale_factor"] = factor
    if random_ops:
        meta["stateful_random_ops"] = random_ops
    meta["fingerprint"] = fingerprint(meta)
    extra = os.path.join(export_dir, contract.EXTRA_DIR)
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, contract.METADATA_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def fingerprint(meta):
    """Hash of what hosts must agree on: tensors, variables and their order."""
    keys = ("contract_version", "inputs", "targets", "gradients", "variables",
            "metric_state_size")
    blob = json.dumps({k: meta[k] for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _per_output(value, i, name, names, what):
    """value's entry for output i (name): a dict by output name, a list of
    one per output, or one value for every output. A dict or list that does
    not match the outputs is refused, not read in part."""
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        missing = [n for n in names if n not in value]
        if unknown or missing:
            raise ExportError(
                f"{what} is a dict by output name, but the model's outputs are {', '.join(names)}"
                + (f"; it names {', '.join(map(str, unknown))}, which is none" if unknown else "")
                + (f"; it leaves out {', '.join(missing)}" if missing else ""))
        return value[name]
    if isinstance(value, (list, tuple)) and value and _per_output_list(value, what):
        if len(value) != len(names):
            raise ExportError(
                f"{what} lists {len(value)} entries, one per output, but the model has {len(names)} "
                f"({', '.join(names)}); give one per output, or a dict by output name")
        return value[i]
    return value


def _example_shape(given, name):
    """A target's shape of one example as whole numbers: a tuple or list, a
    tf.TensorShape or a 1-D numpy array, of ints or numpy ints ((y.max() + 1,))."""
    import operator

    try:
        dims = given.as_list() if hasattr(given, "as_list") else list(given)
        dims = [operator.index(d) for d in dims]
    except (TypeError, ValueError):
        dims = None
    if dims is None or isinstance(given, (str, bytes)) or any(d < 0 for d in dims):
        raise ExportError(
            f"target_shapes: {given!r} (output {name}) is not the shape of one example: give a "
            "tuple of whole numbers, such as () or (1,) (without the batch dimension)")
    return tuple(dims)


def _per_output_list(value, what):
    """Whether a list is one entry per output: shapes are tuples or lists
    themselves; dtypes are anything but a number (a shape's dimension)."""
    if what == "target_shapes":
        return isinstance(value[0], (list, tuple)) or hasattr(value[0], "as_list") or getattr(value[0], "ndim", 0) == 1
    import operator

    try:
        operator.index(value[0])  # a dimension: the list is one shape
        return False
    except TypeError:
        return True


def _num_elements(v):
    n = 1
    for d in v.shape:
        n *= int(d)
    return n


def _same_var(v, vs):
    return any(v is w for w in vs)




def _monitor_mode(cb, model):
    """"min" or "max": how Keras decides an improvement of cb's monitor."""
    import numpy as np

    mode = getattr(cb, "mode", "auto")
    if mode in ("min", "max"):
        return mode
    if hasattr(cb, "_set_monitor_op"):  # Keras 3: from the metric's direction
        cb.set_model(model)
        if getattr(cb, "monitor_op", None) is None:
            try:
                cb._set_monitor_op()
            except ValueError as e:
                raise ExportError(f"{type(cb).__name__}: {e}") from e
        op = cb.monitor_op
        name = getattr(op, "__name__", "")
        if op is np.less or name == "less":
            return "min"
        if op is np.greater or name == "greater":
            return "max"
    # tf-keras: "acc" in the name means higher is better, as it decides.
    monitor = getattr(cb, "monitor", "")
    return "max" if ("acc" in monitor or monitor.startswith("fmeasure")) else "min"


_RUN_CALLBACKS = ("EarlyStopping", "ReduceLROnPlateau", "TerminateOnNaN", "CSVLogger",
                  "ModelCheckpoint", "TensorBoard")


def _is_keras_own(cls, name):
    """Whether cls is Keras's (or tf-keras's) callback class of that name
    itself, not a class of the user's that shares the name or subclasses it:
    only Keras's own code runs in Go."""
    import sys

    for modname in ("keras", "tf_keras"):
        mod = sys.modules.get(modname)
        own = getattr(getattr(mod, "callbacks", None), name, None)
        if own is not None and cls is own:
            return True
    return False


def _callback_spec(cb, model):
    """What the Go loop needs of one callback: its class and every argument
    that changes what it does, with "auto" modes resolved."""
    name = type(cb).__name__
    if name in _RUN_CALLBACKS and not _is_keras_own(type(cb), name):
        raise ExportError(
            f"callback {name} ({type(cb).__module__}.{type(cb).__qualname__}) is not Keras's own "
            f"{name} but a class of its own, whose code cannot run without Python: pass "
            f"keras.callbacks.{name}, or leave it out ({_callback_advice(name)})"
        )
    if name == "EarlyStopping":
        config = {
            "monitor": cb.monitor, "mode": _monitor_mode(cb, model),
            "min_delta": abs(float(cb.min_delta)), "patience": int(cb.patience),
            "baseline": None if cb.baseline is None else float(cb.baseline),
            "restore_best_weights": bool(cb.restore_best_weights),
            "start_from_epoch": int(getattr(cb, "start_from_epoch", 0)),
            "verbose": int(getattr(cb, "verbose", 0)),
        }
    elif name == "ReduceLROnPlateau":
        if float(cb.factor) >= 1.0:
            raise ExportError(f"ReduceLROnPlateau factor {cb.factor} must be below 1")
        if _learning_rate_variable(model.optimizer) is None:
            raise ExportError(
                "ReduceLROnPlateau sets the optimizer's learning rate, and this optimizer's is a "
                "schedule (or a function), which cannot be set: Keras fails at the first reduction; "
                "give the optimizer a number, or leave the callback out"
            )
        config = {
            "monitor": cb.monitor, "mode": _monitor_mode(cb, model),
            "factor": float(cb.factor), "patience": int(cb.patience),
            "min_delta": abs(float(cb.min_delta)), "cooldown": int(cb.cooldown),
            "min_lr": float(cb.min_lr),
            "verbose": int(getattr(cb, "verbose", 0)),
        }
    elif name == "TerminateOnNaN":
        config = {"raise_error": bool(getattr(cb, "raise_error", False))}
    elif name == "CSVLogger":
        # The whole path: the runtime writes the base name to the job's
        # output data folder and says so where the path names a folder.
        config = {"filename": str(cb.filename), "separator": cb.sep,
                  "append": bool(cb.append)}
    elif name == "ModelCheckpoint":
        if not cb.save_best_only:
            raise ExportError(
                "ModelCheckpoint without save_best_only=True would write the model "
                "every epoch; sagefit writes the trained model to /opt/ml/model and "
                "checkpoints with the hyperparameters checkpoint and checkpoint_steps: "
                "remove it, or pass save_best_only=True to serve the best epoch's model"
            )
        if cb.save_freq != "epoch":
            raise ExportError(
                f"ModelCheckpoint save_freq={cb.save_freq!r}: sagefit judges the best "
                "model at the end of each epoch; use save_freq=\"epoch\""
            )
        best = getattr(cb, "best", None)
        config = {
            "monitor": cb.monitor, "mode": _monitor_mode(cb, model),
            "initial_value_threshold": None if best is None or not np.isfinite(best) else float(best),
            "filepath": str(cb.filepath), "save_weights_only": bool(cb.save_weights_only),
            "verbose": int(getattr(cb, "verbose", 0)),
        }
    elif name == "TensorBoard":
        if getattr(cb, "histogram_freq", 0) or getattr(cb, "embeddings_freq", 0) or getattr(cb, "write_images", False):
            raise ExportError(
                "TensorBoard with histogram_freq, write_images or embeddings_freq: "
                "sagefit writes scalar summaries only (every epoch, and every "
                "update_freq batches); set those to their defaults"
            )
        if getattr(cb, "_start_batch", 0) or getattr(cb, "_stop_batch", 0) or getattr(cb, "write_steps_per_second", False):
            raise ExportError(
                "TensorBoard with profile_batch or write_steps_per_second: sagefit writes "
                "scalar summaries of the metrics and the learning rate only (its own timing is "
                "in output/data/timing.json); set those to their defaults"
            )
        if getattr(cb, "write_graph", False):
            # Keras's default: refusing it would refuse TensorBoard() itself.
            warnings.warn(
                "sagefit: TensorBoard(write_graph=True), Keras's default: sagefit writes scalar "
                "summaries only, not the model's graph; pass write_graph=False to leave it out",
                stacklevel=4,
            )
        freq = cb.update_freq
        if freq == "batch":
            freq = 1
        config = {"log_dir": str(cb.log_dir), "update_freq": freq}
    else:
        raise ExportError(f"callback {name} cannot run without Python: {_callback_advice(name)}")
    return {"class": name, "config": config}


# What sagefit does instead of a callback it cannot run, where it does.
_INSTEAD = {
    "LearningRateScheduler": "for a learning-rate schedule give the optimizer a keras.optimizers.schedules schedule instead",
    "BackupAndRestore": "for resuming, sagefit checkpoints with the hyperparameters checkpoint and checkpoint_steps and resumes from them",
    "History": "sagefit writes the history to output/data/history.json",
    "ProgbarLogger": "sagefit prints Keras's progress and epoch lines itself",
    "SwapEMAWeights": "with the optimizer's use_ema the job ends with the moving averages as the weights, "
                      "as fit does, and validates with the training weights",
}


def _callback_advice(name):
    runs = ("sagefit runs EarlyStopping, ReduceLROnPlateau, TerminateOnNaN, CSVLogger, "
            "ModelCheckpoint(save_best_only=True) and TensorBoard")
    return runs + ("; " + _INSTEAD[name] if name in _INSTEAD else "")


def _trace_failure(fn, specs, catch=Exception):
    """Why fn cannot be traced on specs, in one sentence; None where it can.
    An error not of catch is raised. A trace runs nothing."""
    import tensorflow as tf

    try:
        tf.function(fn, input_signature=specs, autograph=False).get_concrete_function()
    except catch as e:  # noqa: BLE001 - reported as one sentence
        return _cause(e)
    return None


def _takes_sample_weights(model, train_step, test_step, specs):
    """Whether the model's steps take (x, y, sample_weight): Keras's own do;
    a custom step that unpacks `x, y = data` does not, and its model then
    trains without sample weights (a sample_weight.npy is refused). A test
    step of None (one that cannot be traced) is not asked."""
    if not {"train_step", "test_step"} & set(_own_steps(model)):
        return True
    return not any(_trace_failure(step, specs, catch=(ValueError, TypeError))
                   for step in (train_step, test_step) if step is not None)


def _without_compiled_loss(model):
    """Whether compile was given no loss (loss=None) and Keras's own steps
    and compute_loss train the model, on the losses its layers add
    (add_loss), as fit does on inputs alone. A step or compute_loss of the
    model's own may read targets: _custom_step_reads_inputs_alone tells."""
    return not _own_steps(model) and _no_compiled_loss(model)


def _own_steps(model):
    """The steps and compute_loss the model's class defines itself."""
    keras = _keras_for(model)
    cls = type(model)
    return [m for m in ("train_step", "test_step", "compute_loss")
            if getattr(cls, m) is not getattr(keras.Model, m)]


def _no_compiled_loss(model):
    if hasattr(model, "_compile_loss"):  # Keras 3
        return model._compile_loss is None
    # tf-keras keeps a container of no losses.
    return getattr(getattr(model, "compiled_loss", None), "_user_losses", 0) is None


def _fit_data(x, y=None, w=None):
    """The batch as fit hands it to train_step: (x, y), (x, y, w), and x
    itself where fit(x) is given no targets (a list of inputs in a tuple),
    as Keras's pack_x_y_sample_weight makes it."""
    if y is None:
        return (x,) if isinstance(x, list) else x
    return (x, y) if w is None else (x, y, w)


def _custom_step_reads_inputs_alone(model, x_specs, xy_specs, data):
    """Why a model compiled without a loss whose train_step is its own
    trains on inputs alone, as fit(x) runs it (a VAE's, a contrastive
    model's step): the step traced on the batch with targets first, which
    most such steps unpack, failed (the cause returned), and on the inputs
    alone it traces. None otherwise. A trace runs nothing: no weight
    changes."""
    if "train_step" not in _own_steps(model) or not _no_compiled_loss(model):
        return None
    step = lambda *args: model.train_step(data(args))  # noqa: E731
    with_targets = _trace_failure(step, xy_specs)
    if with_targets and not _trace_failure(step, x_specs):
        return with_targets
    return None


def _compiled_losses(model, out_names):
    """(output index, loss object) of each output's compiled loss: Keras 3's
    by its path, tf-keras's in output order (after the build)."""
    flat = getattr(getattr(model, "_compile_loss", None), "_flat_losses", None)
    if flat is not None:
        for entry in flat:
            path, loss = entry[0], entry[1]
            if not path:
                yield 0, loss
            elif isinstance(path[0], int):
                yield path[0], loss
            elif path[0] in out_names:  # a model built on a dict of outputs
                yield out_names.index(path[0]), loss
        return
    losses = getattr(getattr(model, "compiled_loss", None), "_losses", None)
    if isinstance(losses, list):
        yield from ((i, loss) for i, loss in enumerate(losses) if loss is not None)


def _per_element_loss(model, tgt_specs, out_names):
    """The first output whose compiled loss gives more than one value per
    row, as (its name, the values' shape per row), or None (Keras weighs
    values of rank 1, or of shape (batch, 1), by a weight per row; others
    by weights of their own shape, as fit takes them: a sequence's per time
    step, tf-keras's too, which also broadcasts a weight per row over
    values of rank 2). A loss that cannot be traced on its own is left to
    the steps."""
    import tensorflow as tf

    # tf-keras weighs a model of several outputs by a weight per row each,
    # broadcast over a loss of rank 2.
    legacy_rows = _is_legacy_keras(model) and len(tgt_specs) > 1
    for i, loss in _compiled_losses(model, out_names):
        if not hasattr(loss, "call") or i >= len(tgt_specs) or i >= len(model.outputs):
            continue
        pred = model.outputs[i]
        pred_spec = tf.TensorSpec(pred.shape, pred.dtype)
        try:
            values = tf.function(loss.call, autograph=False).get_concrete_function(tgt_specs[i], pred_spec)
        except Exception:  # noqa: BLE001 — the steps' own tracing names their faults
            continue
        shape = values.output_shapes
        if shape.rank is None or shape.rank <= 1 or (shape.rank == 2 and (shape[-1] == 1 or legacy_rows)):
            continue
        return out_names[i], tuple(shape.as_list()[1:])
    return None


def _check_applied(calls, captured, trainable):
    """Refuses, naming the line of the step at fault, a train step whose
    gradients sagefit cannot take as one all-reduced buffer per step."""
    if not calls:
        raise ExportError(
            "the model's train_step never hands gradients to its optimizer; sagefit "
            "takes them from the line `self.optimizer.apply(grads, self.trainable_variables)` "
            "(or `self.optimizer.apply_gradients(zip(grads, variables))`), so the step needs one"
        )
    if len(calls) > 1:
        raise ExportError(
            f"the model's train_step calls the optimizer {len(calls)} times in one step "
            f"({', '.join('optimizer.' + c for c in calls)}); sagefit all-reduces one set of "
            "gradients per step: hand them all to one `self.optimizer.apply(grads, variables)` call"
        )
    seen = []
    for _, v in captured:
        if any(v is w for w in seen):
            raise ExportError(f"the model's train_step hands the optimizer variable {_var_name(v)} twice")
        if not any(v is t for t in trainable):
            raise ExportError(
                f"the model's train_step hands the optimizer variable {_var_name(v)}, which is "
                "not a trainable variable of the model"
            )
        seen.append(v)


def _layers(model):
    """Every layer of the model, nested ones included."""
    if hasattr(model, "_flatten_layers"):
        return [layer for layer in model._flatten_layers(include_self=False)]
    return list(model.layers)


def _handle(v):
    value = getattr(v, "value", None)
    if value is not None and not callable(value) and hasattr(value, "handle"):
        return value.handle  # Keras 3: the tf.Variable inside
    return v.handle


def _assigned_by(fn, variables):
    """For each variable, whether the traced function assigns it: an op
    that writes a variable (an assign, a slice assignment, a scatter)."""
    return _written_by(fn, [_handle(v) for v in variables], _WRITE_OPS)


def _written_by(fn, resources, ops):
    """For each resource (a variable's handle, a lookup table), whether the
    traced function writes it with one of ops.

    Reads the function's graph: such an op whose resource is the
    placeholder the resource was captured as, directly or in the functions
    it runs (a jit_compile=True step is one call of its compiled function;
    a tf.cond's branches and a while loop's body are functions too)."""
    with _saving():  # the trace the SavedModel holds
        graph = fn.get_concrete_function().graph
    written = _written_resources(graph, ops)
    captured = {}
    for external, internal in graph.captures:
        captured[id(external)] = internal
    out = []
    for r in resources:
        ph = captured.get(id(getattr(r, "resource_handle", r)))
        out.append(ph is not None and ph.ref() in written)
    return out


def _captured_tables(fns):
    """The lookup tables (and other TensorFlow resources that are not
    variables) the traced functions capture, each once, in capture order."""
    from tensorflow.saved_model.experimental import TrackableResource

    out = []
    for fn in fns:
        with _saving():  # the trace the SavedModel holds
            graph = fn.get_concrete_function().graph
        for external, _ in graph.captures:
            parent = getattr(external, "_parent_trackable", None)
            resource = parent() if parent is not None else None
            if isinstance(resource, TrackableResource) and not any(resource is t for t in out):
                out.append(resource)
    return out


def _untracked_object(error):
    """What TensorFlow's untracked-capture error names: the object holding
    the captured tensor, else the captured resource's type."""
    text = str(error)
    owner = re.search(r"Trackable referencing this tensor = (.*)", text)
    if owner:
        return owner.group(1).strip()
    kind = re.search(r'type="([^"]+)"', text)
    return f"a resource of type {kind.group(1)}" if kind else "an untracked resource"


def _table_name(table):
    return getattr(table, "name", None) or type(table).__name__


# A probe found tf-keras's SimpleRNN(dropout) and GRU with both dropouts
# off fit's numbers from the first epoch (their masks drawn inside the
# RNN's loop); LSTM's, and GRU's with one dropout, matched. Not understood.
# runtime/run.go says the same at training time.
_LOOPED_RANDOM_WARNING = (
    "the train step draws random numbers inside a loop with TensorFlow's stateful random ops "
    "({}: a tf-keras RNN cell's dropout), whose draws may differ from fit's: training is as "
    "random, its numbers not fit's to the bit (Keras 3's RNN layers keep their seed in a variable "
    "and match)"
)

# What a step that writes a lookup table is told: the model written holds
# its contents, nothing else carries them (runtime/run.go says the same at
# training time).
_WRITTEN_TABLES_WARNING = (
    "the train or test step writes lookup table {}: the model sagefit writes holds its "
    "contents after the last step (the first training process's where several train, each "
    "writing its own; a callback that puts back the best epoch's weights leaves it as it is), "
    "but checkpoints do not carry it (a resumed job starts it from the exported contents) and "
    "steps do not move to TensorFlow's single-threaded executor"
)


def _captured_untracked(fns, known):
    """The variables the traced functions capture that are not in known, in
    the order the functions capture them (the contract's order, which the
    fingerprint covers, must not change between exports): every one, read
    or written, as a write may hide where the exporter cannot see it (an op
    outside _WRITE_OPS, a function it cannot read), and carrying a variable
    that never changes costs only its bytes."""
    known_handles = {id(_handle(v)) for v in known}
    out = []
    for fn in fns:
        with _saving():  # the trace the SavedModel holds
            concrete = fn.get_concrete_function()
        by_handle = {id(_handle(v)): v for v in concrete.variables}
        for external, _ in concrete.graph.captures:
            v = by_handle.get(id(external))
            if v is None or id(external) in known_handles:
                continue
            known_handles.add(id(external))
            if _dtype_name(v.dtype) not in _CARRIED_DTYPES:
                raise ExportError(
                    f"the train or test step uses variable {_var_name(v)} of dtype "
                    f"{_dtype_name(v.dtype)}, which Keras does not track; sagefit carries "
                    "such a variable through checkpoints as numbers: make it numeric or "
                    "a constant"
                )
            out.append(v)
    return out


# The dtypes read_variables and assign_variables carry (model/dtype.go).
_CARRIED_DTYPES = {"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32",
                   "int64", "uint8", "uint16", "uint32", "uint64", "bool"}


# Ops that write the resource variable that is their first input.
_WRITE_OPS = frozenset(
    ["AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp", "ResourceStridedSliceAssign"]
    + [f"ResourceScatter{kind}" for kind in ("Add", "Sub", "Mul", "Div", "Min", "Max", "Update")]
    + [f"ResourceScatterNd{kind}" for kind in ("Add", "Sub", "Update", "Min", "Max")]
)

# Ops that write the lookup table that is their first input.
_TABLE_WRITE_OPS = frozenset(["LookupTableInsertV2", "LookupTableRemoveV2", "LookupTableImportV2"])

# TensorFlow's random ops that keep their generator's state in the op's
# kernel (tf.random.uniform, tf.nn.dropout, tf-keras's Dropout and
# GaussianNoise), not in a variable as Keras 3's layers and tf.random.Generator
# do: each traced copy of the op draws its own sequence, which no
# checkpoint carries.
_STATEFUL_RANDOM_OPS = frozenset([
    "RandomUniform", "RandomUniformInt", "RandomStandardNormal", "TruncatedNormal",
    "ParameterizedTruncatedNormal", "RandomGamma", "RandomPoisson", "RandomPoissonV2",
    "RandomShuffle", "Multinomial", "RandomCrop", "SampleDistortedBoundingBox",
    "SampleDistortedBoundingBoxV2",
    # tf.nn.sampled_softmax_loss and tf.nn.nce_loss draw their candidates so.
    "UniformCandidateSampler", "LogUniformCandidateSampler", "LearnedUnigramCandidateSampler",
    "FixedUnigramCandidateSampler", "ThreadUnsafeUnigramCandidateSampler",
])


def _ops_of(fn, *kinds):
    """For each set of op types in kinds, the names of the ops of those
    types the traced function runs, in its graph and in the functions it
    calls, in order, each once: one walk of the graph for all."""
    with _saving():  # the trace the SavedModel holds
        gdef = fn.get_concrete_function().graph.as_graph_def()
    nodes = list(gdef.node) + [n for f in gdef.library.function for n in f.node_def]
    return [list(dict.fromkeys(n.name for n in nodes if n.op in k)) for k in kinds]


# Ops that call back into Python (tf.py_function, tf.numpy_function): no
# kernel outside a Python process.
_PYTHON_OPS = {"EagerPyFunc", "PyFunc", "PyFuncStateless"}

# Ops that run functions of the graph: the attributes naming them and the
# first of the op's inputs that the functions' inputs map to (a branch
# op's first input is its condition or index).
_CALLING_OPS = {
    "StatefulPartitionedCall": (("f",), 0),
    "PartitionedCall": (("f",), 0),
    "If": (("then_branch", "else_branch"), 1),
    "StatelessIf": (("then_branch", "else_branch"), 1),
    "Case": (("branches",), 1),
    "StatelessCase": (("branches",), 1),
    "While": (("cond", "body"), 0),
    "StatelessWhile": (("cond", "body"), 0),
}


def _written_resources(graph, ops):
    """The graph's tensors (refs) that name a resource one of ops writes,
    in this graph or in a function it runs (a call, a tf.cond branch, a
    while loop's body), mapped back through the op's inputs."""
    written = set()
    for op in graph.get_operations():
        if op.type in ops:
            written.add(op.inputs[0].ref())
        if op.type not in _CALLING_OPS:
            continue
        attrs, first = _CALLING_OPS[op.type]
        for attr in attrs:
            value = op.get_attr(attr)
            for fn in value if isinstance(value, list) else [value]:
                body = getattr(graph._functions.get(fn.name), "graph", None)
                if body is None:
                    continue
                inner = _written_resources(body, ops)
                for outer_t, inner_t in zip(op.inputs[first:], body.inputs):
                    if inner_t.ref() in inner:
                        written.add(outer_t.ref())
    return written


def _averaged_over_hosts(v, desc, assigned):
    """Whether hosts average this variable before it is read (validation,
    checkpoints, the saved model), as MirroredStrategy reads tf-keras's
    BatchNormalization statistics: a non-trainable float model variable
    that the train step updates, unless its own aggregation says otherwise
    (sum, or the first replica's: counters). Keras 3 marks BatchNormalization
    statistics "none", and MirroredStrategy then keeps one copy per replica
    and reads replica 0's; averaging gives the statistics of all hosts' data
    (the mean of the replicas' moving averages, as tf-keras reads them)."""
    if desc["trainable"] or not assigned or not desc["dtype"].startswith(("float", "bfloat")):
        return False
    aggregation = str(getattr(v, "aggregation", "none")).lower()
    return not ("sum" in aggregation or "first" in aggregation)


# A step of at least this many operations (its gradients' trace, functions
# included) is traced once: Keras's own train step is built from the traced
# gradients and optimizer update, and train_steps' loop calls the train
# step instead of tracing it into its body. Tracing costs about linearly in
# the operations (seconds for MobileNetV2's 11,500); the loop's call costs
# each iteration a few microseconds (the seed MLP's few hundred-op step at
# K=32: 4% slower), lost in a step of this size. The testing module lowers
# it to test those paths.
LARGE_STEP_OPS = 5000


def _graph_ops(graph):
    """Operations in a traced graph and in the functions it calls."""
    gdef = graph.as_graph_def()
    return len(gdef.node) + sum(len(f.node_def) for f in gdef.library.function)


def _train_steps(model, step_data, metric_dict, metric_names, updates, traced_step=None):
    """train_steps: the train step run once for each leading slice of the
    stacked step tensors, in order, in one in-graph loop (no step starts
    before the last one's updates); it returns the last step's metrics.

    The step is traced again inside the loop unless traced_step (the
    train_step endpoint) is given: a large step is called instead (see
    LARGE_STEP_OPS)."""
    import tensorflow as tf

    def step(tensors):
        if traced_step is not None:
            return traced_step(*tensors)
        _fresh_trace(updates)
        return metric_dict(model.train_step(step_data(tensors)))

    def train_steps(*stacked):
        def body(i, logs):
            out = step([t[i] for t in stacked])
            return i + 1, {n: out[n] for n in metric_names}

        init = {n: tf.zeros([], tf.float32) for n in metric_names}
        steps = tf.shape(stacked[0])[0]
        _, logs = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), init), parallel_iterations=1)
        return logs

    return train_steps


def _lookup_tables(model):
    """The TensorFlow lookup tables of the model's layers (Keras's
    StringLookup and IntegerLookup keep one; TextVectorization holds such a
    layer)."""
    import tensorflow as tf

    tables = []
    for layer in _layers(model):
        table = getattr(layer, "lookup_table", None)
        if isinstance(table, tf.__internal__.tracking.Trackable) and not any(table is t for t in tables):
            tables.append(table)
    return tables


def _saving():
    """A SaveContext with the options the SavedModel is written with.

    A tf.function's trace cache is keyed by the save options' variable
    policy, so a function traced outside a SaveContext is traced again by
    tf.saved_model.save: every train step twice, seconds each for a large
    model. sagefit traces endpoints only under this context."""
    import tensorflow as tf
    from tensorflow.python.saved_model import save_context

    return save_context.save_context(tf.saved_model.SaveOptions())


def _traced(fn):
    with _saving():
        fn.get_concrete_function()
    return fn


def _write_out(archive, export_dir):
    """ExportArchive.write_out, with the archive's own lookups of the
    endpoints' traces (to list their variables and signatures) made under
    _saving, so that they and tf.saved_model.save's find one trace each.
    The archive's internals (the same in Keras 3 and tf-keras) are used
    where they exist; otherwise its write_out, tracing twice."""
    import tensorflow as tf

    if not (hasattr(archive, "_filter_and_track_resources") and hasattr(archive, "_get_concrete_fn")):
        archive.write_out(export_dir)
        return
    with _saving():
        archive._filter_and_track_resources()
        signatures = {name: archive._get_concrete_fn(name) for name in archive._endpoint_names}
    trackable = getattr(archive, "_tf_trackable", archive)
    tf.saved_model.save(trackable, export_dir, options=tf.saved_model.SaveOptions(), signatures=signatures)


def _endpoint(archive, name):
    """The tf.function an ExportArchive made of an endpoint (Keras 3 keeps it
    on its trackable, tf-keras on the archive)."""
    fn = getattr(getattr(archive, "_tf_trackable", None), name, None)
    return fn if fn is not None else getattr(archive, name)


def _metric_names(logs):
    """The names of a model's metric results as its steps log them: a
    metric whose result is a dict logs each of its keys (fit flattens it
    the same way), in their first place."""
    names = {}
    for k, v in logs.items():
        if isinstance(v, dict):
            names.update(dict.fromkeys(_metric_names(v)))
        else:
            names[str(k)] = None
    return list(names)


def _loss_scaling(optimizer):
    """The optimizer's method that scales the loss before the backward
    pass, or None: Keras 3's scale_loss where it scales (a
    LossScaleOptimizer, a loss_scale_factor), tf-keras's
    LossScaleOptimizer's get_scaled_loss."""
    if callable(getattr(optimizer, "get_scaled_loss", None)):
        return "get_scaled_loss"
    import keras

    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) or getattr(optimizer, "loss_scale_factor", None):
        return "scale_loss"
    return None


def _static_loss_scale(optimizer):
    """Keras 3's loss_scale_factor on an optimizer of its own, or None: the
    gradients its step hands the all-reduce are that many times their size
    until the update divides it out, and float16 on the wire
    (sagefit_fp16_allreduce) divides it out before sending. (A Keras 3
    LossScaleOptimizer's scale changes every overflow, and tf-keras's
    unscales the gradients in the step itself.)"""
    import keras

    if _loss_scaling(optimizer) != "scale_loss" or isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return None
    return float(optimizer.loss_scale_factor)


def _learning_rate_variable(optimizer):
    """The variable the optimizer's steps read their learning rate from, or
    None (a schedule). A LossScaleOptimizer (compile's under a
    mixed_float16 policy) steps with its inner optimizer's rate; its own is
    a placeholder nothing reads."""
    import tensorflow as tf

    while getattr(optimizer, "inner_optimizer", None) is not None:
        optimizer = optimizer.inner_optimizer
    lr = getattr(optimizer, "_learning_rate", None)
    if lr is None:
        return None

    if isinstance(lr, tf.Variable) or type(lr).__name__ == "Variable" or hasattr(lr, "assign"):
        return lr
    return None


def _zeros(d):
    """A batch of one row of zeros of the tensor d describes."""
    import numpy as np

    shape = [1 if s is None else s for s in d["shape"]]
    if d["dtype"] == "string":
        import tensorflow as tf

        return tf.fill(shape, "")  # numpy has no dtype Keras reads as string
    return np.zeros(shape, dtype=d["dtype"])


def _build(model, x, y):
    """Create optimizer and metric variables without changing any weight,
    from a batch of inputs x and targets y."""
    try:
        if hasattr(model, "_symbolic_build"):
            model._symbolic_build(data_batch=(x, y))
        else:
            # tf-keras builds compiled losses and metrics on first use.
            import tensorflow as tf

            tx = tf.nest.map_structure(tf.constant, x)
            ty = None if y is None else tf.nest.map_structure(tf.constant, y)
            y_pred = model(tx, training=False)
            model.compiled_loss.build(y_pred)
            model.compiled_metrics.build(y_pred, ty)
    except Exception as e:  # noqa: BLE001 - reported as one sentence
        hint = ""
        if "target" in str(e) and ("rank" in str(e) or "shape" in str(e)):
            hint = ("; a loss that takes integer class labels, if its name does not say 'sparse', "
                    "needs target_shapes=[()] (one per output)")
        raise ExportError(f"the model cannot be built from its inputs: {_cause(e)}{hint}") from None
    if not getattr(model.optimizer, "built", False):
        model.optimizer.build(model.trainable_variables)
