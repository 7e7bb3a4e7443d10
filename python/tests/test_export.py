"""Exporter tests: the contract file, errors, and the SavedModel from Python."""

import json
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import keras
import tensorflow as tf

import sagefit
from sagefit import contract
from sagefit.testing import FAMILIES


def _seed_model():
    keras.utils.set_random_seed(3)
    build, _ = FAMILIES["seed"]
    return build()


def test_export_writes_contract_and_keeps_weights(tmp_path):
    model = _seed_model()
    before = [w.copy() for w in model.get_weights()]
    meta = sagefit.export(model, str(tmp_path / "m"))
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    with open(tmp_path / "m" / contract.EXTRA_DIR / contract.METADATA_FILE) as f:
        on_disk = json.load(f)
    assert on_disk == meta
    assert meta["contract_version"] == contract.VERSION
    assert meta["inputs"][0]["name"].startswith("input_layer")
    assert meta["targets"][0]["shape"] == [None, 1]
    assert meta["metrics"] == ["loss", "accuracy"]
    assert meta["gradient_size"] == 10 * 16 + 16 + 16 + 1
    assert [v["kind"] for v in meta["variables"]].count("model") == 4
    assert meta["learning_rate_assignable"] is True
    assert meta["fingerprint"] == sagefit.fingerprint(meta)


def test_serving_signature_predicts_like_keras(tmp_path):
    model = _seed_model()
    meta = sagefit.export(model, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    x = np.random.default_rng(0).random((7, 10), dtype=np.float32)
    serve = loaded.signatures["serving_default"]
    out = serve(**{meta["inputs"][0]["key"]: tf.constant(x)})
    np.testing.assert_allclose(
        out[meta["outputs"][0]].numpy(), model.predict(x, verbose=0), rtol=1e-6
    )


def test_sparse_loss_takes_integer_class_targets(tmp_path):
    build, _ = FAMILIES["multiclass"]
    meta = sagefit.export(build(), str(tmp_path / "m"))
    assert meta["targets"][0]["shape"] == [None]
    assert meta["optimizer"] == "SGD"


def test_losses_per_element_take_weights_of_their_shape(tmp_path):
    """A probe's findings: a loss of one value per pixel or time step was
    exported with steps that take a weight per row, and failed at the first
    step (Keras weighs such values by weights of their shape); and a sparse
    loss per time step took a class id per row."""
    keras.utils.set_random_seed(3)
    meta = sagefit.export(FAMILIES["per_pixel"][0](), str(tmp_path / "pixel"))
    assert meta["sample_weights"][0]["shape"] == [None, 8, 8] and meta["sample_weights_refused"] is None
    meta = sagefit.export(FAMILIES["per_timestep"][0](), str(tmp_path / "step"))
    assert meta["targets"][0]["shape"] == [None, 8]  # a class id per time step
    assert meta["sample_weights"][0]["shape"] == [None, 8]
    assert sagefit.export(_seed_model(), str(tmp_path / "seed"))["sample_weights"][0]["shape"] == [None]
    # Several outputs: their steps are exported unweighted, saying why.
    x = keras.Input((4, 4, 1))
    model = keras.Model(x, [keras.layers.Conv2D(1, 3, padding="same", name=n)(x) for n in ("a", "b")])
    model.compile(optimizer="adam", loss="mse")
    meta = sagefit.export(model, str(tmp_path / "two"))
    assert meta["sample_weights"] == [] and "train_step_weighted" not in meta["signatures"]
    assert meta["sample_weights_refused"].startswith("the loss of output 'a' is one value per element of shape (4, 4)")


def test_model_built_on_dicts_names_tensors_by_key(tmp_path):
    """A probe's findings: a model built on dicts of inputs and outputs was
    refused ("list indices must be integers"); fit takes them by key."""
    build, _ = FAMILIES["dict_io"]
    meta = sagefit.export(build(), str(tmp_path / "m"))
    assert [d["name"] for d in meta["inputs"]] == ["a", "b"]
    assert [d["name"] for d in meta["targets"]] == ["kind", "price"]
    assert meta["outputs"] == ["kind", "price"]
    assert meta["targets"][0]["shape"] == [None]  # the sparse loss of "kind", found by key
    assert [d["name"] for d in meta["sample_weights"]] == ["sample_weight_kind", "sample_weight_price"]


def test_model_compiled_without_a_loss_takes_no_targets(tmp_path):
    """A probe's finding: a model compiled with loss=None, trained by its
    layers' add_loss, asked for a target file fit(x) does not take."""
    build, _ = FAMILIES["add_loss_only"]
    meta = sagefit.export(build(), str(tmp_path / "m"))
    assert meta["targets"] == [] and meta["sample_weights"] == []
    assert "train_step" in meta["signatures"] and "compiled without a loss" in meta["sample_weights_refused"]


def test_own_step_compiled_without_a_loss_keeps_its_targets(tmp_path):
    """A review's finding: the Keras guide's lower-level step (its own loss,
    `x, y = data`, compile without a loss) lost its targets and failed to
    trace ('not enough values to unpack'), as did a compute_loss of its own."""

    class OwnStep(keras.Model):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(y - self(x, training=True)))
            self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
            return {"loss": loss}

        def test_step(self, data):
            x, y = data
            return {"loss": tf.reduce_mean(tf.square(y - self(x, training=False)))}

    class OwnLoss(keras.Model):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return tf.reduce_mean(tf.square(y_pred - y))

    for cls in (OwnStep, OwnLoss):
        x = keras.Input((4,))
        model = cls(x, keras.layers.Dense(1, name="out")(x))
        model.compile(optimizer="adam")
        meta = sagefit.export(model, str(tmp_path / cls.__name__))
        assert [t["name"] for t in meta["targets"]] == ["out"], cls.__name__


def test_two_named_inputs(tmp_path):
    build, _ = FAMILIES["two_inputs"]
    meta = sagefit.export(build(), str(tmp_path / "m"))
    assert [t["name"] for t in meta["inputs"]] == ["a", "b"]
    assert [t["name"] for t in meta["targets"]] == ["price"]
    assert meta["metrics"] == ["loss", "mae"]


def test_subclassed_model_is_refused_with_the_wrapper(tmp_path):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    model = Net()
    model.compile(optimizer="adam", loss="mse")
    model(np.zeros((2, 3), np.float32))  # built, yet no keras.Input
    with pytest.raises(sagefit.ExportError, match=r"subclass of keras.Model \(Net\) with a call\(\) of its own.*wrapped = keras.Model\(inputs, model\(inputs\)\)"):
        sagefit.export(model, str(tmp_path / "m"))
    inputs = keras.Input((3,))
    wrapped = keras.Model(inputs, model(inputs))
    wrapped.compile(optimizer="adam", loss="mse")
    meta = sagefit.export(wrapped, str(tmp_path / "w"))
    assert [v["name"].split("/")[-1] for v in meta["gradients"]] == ["kernel", "bias"] and meta["gradient_size"] == 4
    # A Sequential without an Input is told to give one.
    seq = keras.Sequential([keras.layers.Dense(1)])
    seq.compile(optimizer="adam", loss="mse")
    with pytest.raises(sagefit.ExportError, match="no known inputs; build it with keras.Input"):
        sagefit.export(seq, str(tmp_path / "s"))


def test_subclass_with_its_own_step_is_told_to_keep_it(tmp_path):
    """keras.io's VAE: a subclass with its own train_step and no call().
    It was told it had a call() of its own and to wrap it, which fails
    (no call) and would drop the step. Built through keras.Model's
    __init__ on keras.Input, as the sentence says, it exports and takes
    no targets: its step reads the inputs alone, as fit(x) hands them
    (training it is TestKerasParity's own_loss_inputs_alone)."""
    class AE(keras.Model):
        def __init__(self, enc, dec, **kwargs):
            if "inputs" in kwargs:
                super().__init__(**kwargs)
            else:
                super().__init__()
            self.enc, self.dec = enc, dec

        def train_step(self, data):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(data - self.dec(self.enc(data))))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    i = keras.Input((4,))
    enc = keras.Model(i, keras.layers.Dense(2)(i))
    j = keras.Input((2,))
    dec = keras.Model(j, keras.layers.Dense(4)(j))
    model = AE(enc, dec)
    model.compile(optimizer="adam")
    with pytest.raises(sagefit.ExportError, match=r"subclass of keras.Model \(AE\) without a call\(\).*keep its "
                       r"train_step and give its __init__ keras.Model's inputs and outputs, super\(\).__init__\(inputs, outputs\)"):
        sagefit.export(model, str(tmp_path / "m"))
    x = keras.Input((4,))
    functional = AE(enc, dec, inputs=x, outputs=dec(enc(x)))
    functional.compile(optimizer="adam")
    with pytest.warns(UserWarning) as caught:
        meta = sagefit.export(functional, str(tmp_path / "f"))
    said = " ".join(str(w.message) for w in caught)
    assert "takes the batch's inputs alone" in said  # and why: its trace on targets failed
    assert "test step cannot be traced" in said  # no test_step: Keras's has no loss to compute
    assert meta["targets"] == [] and meta["test_step_refused"].startswith("No loss to compute")


def test_test_step_that_cannot_be_traced_is_left_out(tmp_path):
    """keras.io's lower-level custom step: compile without a loss, a loss of
    the step's own; Keras's test step has no loss to compute, and fit fails
    on validation data. The export failed; it leaves the test step out,
    with a warning, and the metadata says why (the job refuses validation
    data with it)."""
    build, _ = FAMILIES["own_loss_no_test_step"]
    with pytest.warns(UserWarning, match=r"the model's test step cannot be traced \(No loss to compute.*a job given "
                      r"validation data is refused") as caught:
        meta = sagefit.export(build(), str(tmp_path / "m"))
    assert caught[0].filename == __file__  # at the user's line
    assert meta["test_step_refused"].startswith("No loss to compute")
    assert [t["name"] for t in meta["targets"]] == ["y"]
    assert "test_step" not in meta["signatures"] and "test_step_weighted" not in meta["signatures"]
    assert "train_step" in meta["signatures"] or "train_step_weighted" in meta["signatures"]


def test_own_steps_failures_are_the_models(tmp_path):
    """Found by a review. A test_step of the model's own that fails is the
    model's error: the export fails, it is not left out. A train_step that
    reads targets (x, y = data when it has them) whose trace on the default
    targets fails is exported on inputs alone, as it traces there, with a
    warning that names the failure; given target_shapes, it keeps its
    targets."""
    class BrokenTest(keras.Model):
        def test_step(self, data):
            x, y = data
            return {"loss": tf.reduce_mean(tf.square(self(x)[:, :2] - y))}

    x = keras.Input((4,))
    broken = BrokenTest(x, keras.layers.Dense(3)(x))
    broken.compile(optimizer="adam", loss="mse")
    with pytest.raises(sagefit.ExportError, match="the model's steps could not be traced or saved"):
        sagefit.export(broken, str(tmp_path / "broken"))

    class SemiSupervised(keras.Model):
        def train_step(self, data):
            x, y = data if isinstance(data, tuple) else (data, None)
            with tf.GradientTape() as tape:
                p = self(x, training=True)
                if y is None:
                    loss = -tf.reduce_mean(tf.reduce_sum(p * tf.math.log(p + 1e-7), axis=-1))
                else:
                    loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, p))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

        def test_step(self, data):
            x, y = data if isinstance(data, tuple) else (data, None)
            return {"loss": tf.reduce_mean(self(x))}

    def semi():
        i = keras.Input((4,))
        m = SemiSupervised(i, keras.layers.Dense(5, activation="softmax", name="cls")(i))
        m.compile(optimizer="adam")
        return m

    with pytest.warns(UserWarning, match=r"own train_step \(compiled without a loss\) takes the batch's inputs alone.*"
                      r"on inputs and targets it failed \(.*give export target_shapes") as caught:
        meta = sagefit.export(semi(), str(tmp_path / "alone"))
    assert meta["targets"] == [] and caught[0].filename == __file__
    meta = sagefit.export(semi(), str(tmp_path / "targets"), target_shapes=[()], target_dtypes=["int64"])
    assert [(t["name"], t["dtype"]) for t in meta["targets"]] == [("cls", "int64")]
    # Wrong shapes given: the step's own failure, not a word about inputs alone.
    with pytest.raises(sagefit.ExportError, match="could not be traced or saved") as e:
        sagefit.export(semi(), str(tmp_path / "wrong"), target_shapes=[(5,)])
    assert "inputs alone" not in str(e.value)


def test_uncompiled_model_is_refused(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(sagefit.ExportError, match="not compiled"):
        sagefit.export(model, str(tmp_path / "m"))


def test_existing_directory_is_not_overwritten(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(sagefit.ExportError, match="exists"):
        sagefit.export(_seed_model(), str(tmp_path / "m"))


def test_frozen_model_without_trainable_weights_is_refused(tmp_path):
    model = _seed_model()
    for layer in model.layers:
        layer.trainable = False
    model.compile(optimizer="adam", loss="binary_crossentropy")
    with pytest.raises(sagefit.ExportError, match="no trainable variables"):
        sagefit.export(model, str(tmp_path / "m"))


def test_unconnected_trainable_variable_is_left_untrained(tmp_path):
    a = keras.Input((4,), name="a")
    unused = keras.layers.Dense(2, name="unused")
    out = keras.layers.Dense(1, name="out")(a)
    model = keras.Model(a, [out])
    unused.build((None, 4))
    model._tracker.unlock()
    model.extra = unused
    model._tracker.lock()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match="variables unused/kernel, unused/bias get no gradient") as caught:
        meta = sagefit.export(model, str(tmp_path / "m"))
    # Named at the user's line, not inside sagefit.
    assert any(w.filename == __file__ for w in caught if "sagefit:" in str(w.message))
    assert meta["untrained_variables"] == ["unused/kernel", "unused/bias"]
    assert [g["name"] for g in meta["gradients"]] == ["out/kernel", "out/bias"]
    assert meta["gradient_size"] == 5


def test_loss_without_any_gradient_is_refused(tmp_path):
    a = keras.Input((4,), name="a")
    model = keras.Model(a, keras.layers.Dense(1, name="out")(a))
    model.compile(optimizer="sgd", loss=lambda y, p: keras.ops.mean(y))
    with pytest.raises(sagefit.ExportError, match="no trainable variable gets a gradient"):
        sagefit.export(model, str(tmp_path / "m"))


def test_tf_keras_nadam_export_leaves_fit_fresh(tmp_path):
    # tf-keras's Nadam bakes a Python count of its traces into its step: the
    # export leaves it where a fresh fit's step finds it (build()'s count
    # plus one per variable), so the parity fixtures' fit after the export
    # is a fresh fit's, and so is the step sagefit runs (TestKerasParity).
    tf_keras = pytest.importorskip("tf_keras", reason="tf-keras is not installed")
    rng = np.random.default_rng(1)
    x, y = rng.random((96, 10), dtype=np.float32), rng.integers(0, 2, 96).astype(np.float32)

    def build():
        tf_keras.utils.set_random_seed(1)
        m = tf_keras.Sequential([tf_keras.Input((10,)), tf_keras.layers.Dense(4, activation="relu"), tf_keras.layers.Dense(1)])
        m.compile(tf_keras.optimizers.Nadam(0.01), "mse")
        return m

    exported = build()
    sagefit.export(exported, str(tmp_path / "m"))
    assert exported.optimizer._u_product_counter == 1 + 4
    fresh = build()
    for m in (exported, fresh):
        m.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    for a, b in zip(exported.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("by_name", [False, True])
def test_tf_keras_nadam_counts_of_a_second_optimizer(tmp_path, by_name):
    # A custom step's own Nadam, given its pairs first or by name: its count
    # is a fresh fit's too (given by name it was not reset, and every traced
    # step baked another).
    tf_keras = pytest.importorskip("tf_keras", reason="tf-keras is not installed")

    class Two(tf_keras.Model):
        def train_step(self, data):
            x, y = data[0], data[1]
            with tf.GradientTape(persistent=True) as tape:
                loss = tf.reduce_mean(tf.square(self(x) - y))
            ga = tape.gradient(loss, self.a.trainable_variables)
            gb = tape.gradient(loss, self.b.trainable_variables)
            pairs = zip(ga, self.a.trainable_variables)
            if by_name:
                self.other.apply_gradients(grads_and_vars=pairs)
            else:
                self.other.apply_gradients(pairs)
            self.optimizer.apply_gradients(zip(gb, self.b.trainable_variables))
            return {"loss": loss}

    inputs = tf_keras.Input((4,))
    a, b = tf_keras.layers.Dense(3), tf_keras.layers.Dense(1)
    model = Two(inputs, b(a(inputs)))
    model.a, model.b, model.other = a, b, tf_keras.optimizers.Nadam(0.01)
    model.compile(tf_keras.optimizers.Nadam(0.01), "mse")
    sagefit.export(model, str(tmp_path / "m"))
    assert model.other._u_product_counter == 1 + 2
    assert model.optimizer._u_product_counter == 1 + 2


def test_tf_keras_rnn_dropout_is_named(tmp_path):
    # Its masks, drawn inside the RNN's loop, trained off fit's numbers
    # without a word (found by a probe).
    tf_keras = pytest.importorskip("tf_keras", reason="tf-keras is not installed")
    model = tf_keras.Sequential([tf_keras.Input((6, 3)), tf_keras.layers.SimpleRNN(4, dropout=0.2), tf_keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    with pytest.warns(UserWarning, match="draws random numbers inside a loop with TensorFlow's stateful random ops"):
        meta = sagefit.export(model, str(tmp_path / "m"))
    assert any("/while/" in n for n in meta["stateful_random_ops"])


def test_tf_keras_model_exports(tmp_path):
    tf_keras = pytest.importorskip("tf_keras", reason="tf-keras is not installed")
    model = tf_keras.Sequential(
        [tf_keras.Input((4,)), tf_keras.layers.Dense(2, activation="softmax")]
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    before = [w.copy() for w in model.get_weights()]
    meta = sagefit.export(model, str(tmp_path / "m"))
    assert meta["legacy_keras"] is True
    assert meta["metrics"] == ["loss", "accuracy"]
    assert meta["targets"][0]["shape"] == [None]
    assert meta["gradient_size"] == 4 * 2 + 2
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_tf_keras_legacy_optimizer_refused(tmp_path):
    # It failed with AttributeError: 'SGD' object has no attribute 'build'.
    tf_keras = pytest.importorskip("tf_keras", reason="tf-keras is not installed")
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(1)])
    model.compile(optimizer=tf_keras.optimizers.legacy.SGD(0.05, momentum=0.9), loss="mse")
    with pytest.raises(sagefit.ExportError, match=r"optimizer SGD is one of tf-keras's legacy optimizers .* compile with tf_keras.optimizers.SGD"):
        sagefit.export(model, str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()

    class Mine(tf_keras.optimizers.legacy.Adam):  # a user's own, defined in their script
        pass

    model.compile(optimizer=Mine(0.01), loss="mse")
    with pytest.raises(sagefit.ExportError, match=r"optimizer Mine is one of tf-keras's legacy optimizers .*\.Adam\).* compile with tf_keras.optimizers.Adam"):
        sagefit.export(model, str(tmp_path / "m"))


def test_callbacks_recorded_with_modes_resolved(tmp_path):
    model = _seed_model()
    cbs = [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=3),
        keras.callbacks.ReduceLROnPlateau(monitor="loss"),
        keras.callbacks.CSVLogger("/somewhere/log.csv", separator=";"),
    ]
    meta = sagefit.export(model, str(tmp_path / "m"), callbacks=cbs)
    classes = [c["class"] for c in meta["callbacks"]]
    assert classes == ["EarlyStopping", "ReduceLROnPlateau", "CSVLogger"]
    assert meta["callbacks"][0]["config"]["mode"] == "max"  # accuracy goes up
    assert meta["callbacks"][1]["config"]["mode"] == "min"
    assert meta["callbacks"][2]["config"] == {"filename": "/somewhere/log.csv", "separator": ";", "append": False}


@pytest.mark.parametrize(
    "callback, words",
    [
        (lambda: keras.callbacks.LambdaCallback(), "LambdaCallback cannot run without Python"),
        (lambda: keras.callbacks.LearningRateScheduler(lambda e, lr: lr), "keras.optimizers.schedules"),
        (lambda: keras.callbacks.ModelCheckpoint("/x/m.keras"), "save_best_only=True"),
        (lambda: keras.callbacks.TensorBoard("/x/tb", histogram_freq=1), "scalar summaries only"),
        (lambda: keras.callbacks.SwapEMAWeights(), "with the optimizer's use_ema the job ends with the moving averages"),
    ],
)
def test_callbacks_sagefit_cannot_run_are_refused(tmp_path, callback, words):
    with pytest.raises(sagefit.ExportError, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        sagefit.export(_seed_model(), str(tmp_path / "m"), callbacks=[callback()])


def test_callback_of_the_users_own_under_a_keras_name_is_refused(tmp_path):
    # Exported as the built-in one before, its own code dropped.
    class EarlyStopping(keras.callbacks.EarlyStopping):
        def on_epoch_end(self, epoch, logs=None):
            pass

    with pytest.raises(sagefit.ExportError, match=r"callback EarlyStopping \(.*EarlyStopping\) is not Keras's own"):
        sagefit.export(_seed_model(), str(tmp_path / "m"), callbacks=[EarlyStopping()])
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_batch_norm_statistics_marked_for_averaging(tmp_path, jit_compile):
    # With jit_compile=True the step's updates sit inside the call of its
    # compiled function: still found.
    build, _ = FAMILIES["batch_norm"]
    model = build()
    if jit_compile:
        model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=True)
    meta = sagefit.export(model, str(tmp_path / "m"))
    assert meta["jit_compile"] is jit_compile
    averaged = [v["name"] for v in meta["variables"] if v.get("aggregation") == contract.MEAN]
    assert sorted(n.rsplit("/", 1)[-1] for n in averaged) == ["moving_mean", "moving_variance"]
    assert meta["synchronized_batch_norm"] == []


@pytest.mark.parametrize("metric", [
    lambda: keras.metrics.F1Score(threshold=0.5),
    lambda: keras.metrics.Precision(thresholds=[0.3, 0.5]),
])
def test_metric_of_several_values_refused(tmp_path, metric):
    # A metric of one value per class or threshold failed in TensorFlow's
    # words ("enters the loop with shape (), but has shape (1,)").
    model = _seed_model()
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=[metric()])
    with pytest.raises(sagefit.ExportError, match=r"the train step logs \w+ as a value of shape \(\d+,\); .* takes average=\"micro\""):
        sagefit.export(model, str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_own_metric_classes_named(tmp_path):
    # The runtime warns of them on several hosts, where it sums metric
    # states; a metric function is wrapped in Keras's own mean: not named.
    build, _ = FAMILIES["seed_own_metric"]
    assert sagefit.export(build(), str(tmp_path / "own"))["own_metrics"] == ["positives"]

    def mean_prediction(y_true, y_pred):
        return y_pred

    model = _seed_model()
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["mae", mean_prediction])
    meta = sagefit.export(model, str(tmp_path / "seed"))
    assert "own_metrics" not in meta  # an older runtime would warn of it
    # The runtime warns of labels fed in another shape than fit would
    # pass them, which a function of the user's own reads as given
    # (Keras's own, and "mae", match the ranks first).
    assert meta["labels_as_given"] == ["mean_prediction"]


def test_losses_and_metrics_reading_labels_as_given_named(tmp_path):
    # Keras 3 gives a Loss subclass's call and a Metric subclass the labels
    # as fit was given them; a loss function is wrapped, matching ranks.
    class HalfAbs(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return 0.5 * keras.ops.abs(y_true - y_pred)

    def abs_error(y_true, y_pred):
        return keras.ops.abs(y_true - y_pred)

    model = _seed_model()
    model.compile(optimizer=model.optimizer, loss=HalfAbs(name="half_abs"), metrics=["mae"])
    assert sagefit.export(model, str(tmp_path / "loss"))["labels_as_given"] == ["half_abs"]
    model = _seed_model()
    model.compile(optimizer=model.optimizer, loss=abs_error, metrics=["mae"])
    assert "labels_as_given" not in sagefit.export(model, str(tmp_path / "fn"))


def test_sparse_gradients_named(tmp_path):
    # Several processes gather their rows (clipping then sees the rows, as
    # one process's does): no longer named as clipped after a dense sum.
    build, _ = FAMILIES["embedding_clipnorm"]
    meta = sagefit.export(build(), str(tmp_path / "clipped"))
    assert [n.split("/")[-1] for n in meta["sparse_gradients"]] == ["embeddings"]
    assert "clipped_sparse_gradients" not in meta
    assert meta["sparse_gradient_indexes"] == [0]
    assert "sparse_gradients" not in sagefit.export(_seed_model(), str(tmp_path / "dense"))
    # Two gradients of one name, the second dense (regularized): the place
    # says which one is rows.
    build, _ = FAMILIES["embedding_same_names"]
    meta = sagefit.export(build(), str(tmp_path / "same"))
    assert [g["name"] for g in meta["gradients"]][:2] == ["emb/embeddings", "emb/embeddings"]
    assert meta["sparse_gradient_indexes"] == [0]


def test_static_loss_scale_named(tmp_path):
    # Keras 3's loss_scale_factor stays on the gradients until the update:
    # float16 on the wire takes it off first. A LossScaleOptimizer's changes.
    build, _ = FAMILIES["seed_loss_scale_factor"]
    assert sagefit.export(build(), str(tmp_path / "factor"))["loss_scale_factor"] == 1e6
    build, _ = FAMILIES["mixed_float16"]
    assert "loss_scale_factor" not in sagefit.export(build(), str(tmp_path / "dynamic"))


def test_unknown_shape_beyond_batch_refused(tmp_path):
    # A text model on keras.Input((None,)) exported without a word and failed
    # at the job's start; fit takes its padded arrays of one width.
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(50, 4, mask_zero=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.LSTM(3)(x)))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    with pytest.raises(sagefit.ExportError, match=r"input \S+ has shape \(None, None\), unknown beyond the batch; .*pad sequences"):
        sagefit.export(model, str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("value", [1, np.True_])
def test_jit_compile_taken_as_fit_takes_it(tmp_path, value):
    # fit compiles its step with XLA for any true jit_compile; the export
    # compared with `is True` and trained 1 and np.True_ without XLA.
    model = _seed_model()
    model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=value)
    assert sagefit.export(model, str(tmp_path / "m"))["jit_compile"] is True


def _step_model(step):
    class M(keras.Model):
        def train_step(self, data):
            return step(self, data)

    inputs = keras.Input((10,))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(4)(inputs))
    model = M(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


def test_custom_steps_sagefit_cannot_take_are_refused_naming_the_line(tmp_path):
    def no_update(self, data):
        x, y = data
        return {"loss": self.compute_loss(y=y, y_pred=self(x, training=True))}

    def two_updates(self, data):
        x, y = data
        with tf.GradientTape(persistent=True) as tape:
            loss = self.compute_loss(y=y, y_pred=self(x, training=True))
        first, second = self.trainable_variables[:2], self.trainable_variables[2:]
        self.optimizer.apply(tape.gradient(loss, first), first)
        self.optimizer.apply(tape.gradient(loss, second), second)
        return {"loss": loss}

    with pytest.raises(sagefit.ExportError, match=r"never hands gradients to its optimizer.*self\.optimizer\.apply\(grads"):
        sagefit.export(_step_model(no_update), str(tmp_path / "a"))
    with pytest.raises(sagefit.ExportError, match=r"calls the optimizer 2 times in one step"):
        sagefit.export(_step_model(two_updates), str(tmp_path / "b"))


def test_custom_step_updating_some_variables_records_them(tmp_path):
    build, _ = FAMILIES["custom_step_partial"]
    meta = sagefit.export(build(), str(tmp_path / "m"))
    assert [g["name"].rsplit("/", 1)[-1] for g in meta["gradients"]] == ["kernel", "bias"]
    assert meta["gradient_size"] == 16 + 1


def test_custom_step_state_is_read_and_assigned_with_the_variables(tmp_path):
    # A tf.Variable the step writes that Keras does not track: listed after
    # the optimizer's, so checkpoints, resumes and a move carry it.
    build, _ = FAMILIES["custom_step_state"]
    meta = sagefit.export(build(), str(tmp_path / "m"))
    step = [v for v in meta["variables"] if v["kind"] == "step"]
    assert [(v["name"], v["dtype"], v["shape"]) for v in step] == [("steps_seen", "float32", [])]
    assert meta["variables"][-1] == step[0]
    seed = sagefit.export(_seed_model(), str(tmp_path / "seed"))
    assert {v["kind"] for v in seed["variables"]} == {"model", "optimizer"}


def _state_step_model(n, touch):
    """A model whose custom train step keeps n float variables Keras does
    not track (s0, s1, ...): touch(s, x) uses them before the gradient and
    returns a scale for the loss."""

    class Step(keras.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.extra = [tf.Variable([0.0, 0.0], name=f"s{i}") for i in range(n)]

        def train_step(self, data):
            x, y = data
            scale = touch(self.extra, x)
            with tf.GradientTape() as tape:
                loss = self.compute_loss(y=y, y_pred=self(x, training=True)) * scale
            self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
            return {"loss": loss}

    keras.utils.set_random_seed(3)
    inputs = keras.Input((10,))
    model = Step(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="adam", loss="mse")
    return model


def test_every_untracked_variable_a_step_uses_is_carried_in_capture_order(tmp_path):
    # Written in a tf.cond branch, by a slice assignment, or only read: the
    # exporter cannot see every write, so it carries all of them, in the
    # order the step first uses them (the fingerprint covers the order).
    def touch(s, x):
        tf.cond(tf.reduce_sum(x) > 0, lambda: s[0].assign_add([1.0, 1.0]), lambda: s[0].assign_sub([1.0, 1.0]))
        s[1][0].assign(2.0)
        return 1.0 + s[2][0] + s[3][1] + s[4][0] + s[5][1]

    for n in range(3):  # an order from the variables' ids would change
        meta = sagefit.export(_state_step_model(6, touch), str(tmp_path / f"m{n}"))
        assert [v["name"] for v in meta["variables"] if v["kind"] == "step"] == [f"s{i}" for i in range(6)]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_step_writes_in_branches_loops_and_slices_are_averaged(tmp_path, jit_compile):
    # A float variable the step writes is averaged over hosts before it is
    # read, wherever the write sits: a tf.cond branch, a while loop's body,
    # a slice assignment, a scatter (with XLA, inside the compiled
    # function's call). One only read is left alone.
    def touch(s, x):
        tf.cond(tf.reduce_sum(x) > 0, lambda: s[0].assign_add([1.0, 1.0]), lambda: s[0].read_value())
        tf.while_loop(lambda i: i < 2, lambda i: (s[1].assign_add([1.0, 0.0]), i + 1)[1], [tf.constant(0)])
        s[2][0].assign(2.0)
        s[3].scatter_add(tf.IndexedSlices(tf.constant([1.0]), tf.constant([1])))
        return 1.0 + s[4][0]

    model = _state_step_model(5, touch)
    model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=jit_compile)
    meta = sagefit.export(model, str(tmp_path / "m"))
    assert meta["jit_compile"] is jit_compile
    averaged = {v["name"] for v in meta["variables"] if v.get("aggregation") == contract.MEAN}
    assert averaged == {"s0", "s1", "s2", "s3"}


def test_step_lookup_tables_are_exported_and_written_ones_named(tmp_path):
    # A tf.lookup table the step uses that Keras does not track is exported
    # with the model (TensorFlow refused to save it). One the step writes
    # is named, with a warning: checkpoints and a move do not carry it.
    build, _ = FAMILIES["custom_step_table"]
    with pytest.warns(UserWarning, match=r"the train or test step writes lookup table steps_seen: .*checkpoints do not"):
        meta = sagefit.export(build(), str(tmp_path / "written"))
    assert meta["written_tables"] == ["steps_seen"]
    assert not [v for v in meta["variables"] if v["kind"] == contract.KIND_STEP]

    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant([0]), tf.constant([2.0])), 1.0, name="scale")

    def read_only(s, x):
        return table.lookup(tf.constant(0))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = sagefit.export(_state_step_model(0, read_only), str(tmp_path / "read"))
    assert meta["written_tables"] == []
    assert not [w for w in caught if "lookup table" in str(w.message)]


def test_table_written_by_the_test_step_is_named(tmp_path):
    # Validation runs the test step: a table it writes is named too.
    class Counting(keras.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.evaluated = tf.lookup.experimental.MutableHashTable(tf.int32, tf.float32, 0.0, name="evaluated")

        def test_step(self, data):
            self.evaluated.insert(tf.constant([0]), tf.constant([1.0]))
            return super().test_step(data)

    inputs = keras.Input((10,))
    model = Counting(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="adam", loss="mse")
    with pytest.warns(UserWarning, match="writes lookup table evaluated"):
        meta = sagefit.export(model, str(tmp_path / "m"))
    assert meta["written_tables"] == ["evaluated"]


def test_object_a_saved_model_cannot_hold_is_refused_in_a_sentence(tmp_path):
    # A summary writer the step captures: TensorFlow's AssertionError
    # becomes one sentence naming it, and nothing is left behind.
    writer = tf.summary.create_file_writer(str(tmp_path / "logs"))

    def summarize(s, x):
        with writer.as_default():
            tf.summary.scalar("x", tf.reduce_sum(x), step=0)
        return 1.0

    with pytest.raises(sagefit.ExportError, match=r"cannot hold \(a resource of type tensorflow::SummaryWriterInterface\)"):
        sagefit.export(_state_step_model(0, summarize), str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_tf_keras_subclass_defined_outside_tf_keras_is_legacy(tmp_path):
    tf_keras = pytest.importorskip("tf_keras", reason="tf-keras is not installed")

    class Custom(tf_keras.Model):  # this module's, as a user's script's
        def train_step(self, data):
            return super().train_step(data)

    inputs = tf_keras.Input((4,))
    model = Custom(inputs, tf_keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    assert sagefit.export(model, str(tmp_path / "m"))["legacy_keras"] is True


def test_untracked_string_variable_is_refused_naming_it(tmp_path):
    class Tagged(keras.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.tag = tf.Variable("run", name="tag")

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = self.compute_loss(y=y, y_pred=self(x, training=True))
                loss += 0.0 * tf.cast(tf.strings.length(self.tag), tf.float32)
            self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
            return {"loss": loss}

    inputs = keras.Input((10,))
    model = Tagged(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(sagefit.ExportError, match="variable tag of dtype string"):
        sagefit.export(model, str(tmp_path / "m"))


def _matmuls_by_function(export_dir):
    """The functions of a SavedModel's library that hold MatMul ops, by
    their traced Python function's name."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    out = {}
    for fn in sm.meta_graphs[0].graph_def.library.function:
        n = sum(1 for node in fn.node_def if node.op == "MatMul")
        if n:
            name = fn.signature.name.removeprefix("__inference_").rstrip("0123456789").rstrip("_")
            out[name] = out.get(name, 0) + n
    return out


def test_large_step_is_traced_once_and_called(tmp_path, monkeypatch):
    # A train step of LARGE_STEP_OPS operations or more is traced once:
    # Keras's own step is built from the traced gradients (which
    # compute_gradients returns) and optimizer update, and train_steps'
    # loop calls it. Lowered here so that the seed model counts as large.
    export_module = sys.modules["sagefit.export"]
    size, matmuls = {}, {}
    for threshold in (10**9, 0):
        monkeypatch.setattr(export_module, "LARGE_STEP_OPS", threshold)
        sagefit.export(_seed_model(), str(tmp_path / str(threshold)))
        size[threshold] = os.path.getsize(tmp_path / str(threshold) / "saved_model.pb")
        matmuls[threshold] = _matmuls_by_function(tmp_path / str(threshold))
    # Forward and backward of the two Dense layers: 2 + 3 MatMuls.
    assert matmuls[10**9] == {"serve": 2, "test_step": 2, "step_gradients": 5, "train_step": 5, "while_body": 5}
    assert matmuls[0] == {"serve": 2, "test_step": 2, "step_gradients": 5}
    assert size[0] < 0.8 * size[10**9], size


def test_custom_step_is_traced_whole_however_large(tmp_path, monkeypatch):
    # A custom train step may read variables after its update, which the
    # step built from its gradients and update would not see: it is traced
    # whole, as fit runs it.
    monkeypatch.setattr(sys.modules["sagefit.export"], "LARGE_STEP_OPS", 0)
    build, _ = FAMILIES["custom_step"]
    sagefit.export(build(), str(tmp_path / "m"))
    matmuls = _matmuls_by_function(tmp_path / "m")
    assert matmuls.get("train_step", 0) > 0 and matmuls.get("step_gradients", 0) > 0, matmuls


def test_overwrite_replaces_an_earlier_export_only(tmp_path, monkeypatch):
    """overwrite=True deleted whatever folder it was given (the current
    folder too), before the model was even checked."""
    model = _seed_model()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(sagefit.ExportError, match=r"holds files that are not a sagefit export \(notes.txt\)"):
        sagefit.export(model, str(mine), overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"

    monkeypatch.chdir(mine)
    with pytest.raises(sagefit.ExportError, match="is the current folder or holds it"):
        sagefit.export(model, ".", overwrite=True)
    assert (mine / "notes.txt").exists()

    out = tmp_path / "m"
    sagefit.export(model, str(out))
    before = (out / contract.EXTRA_DIR / contract.METADATA_FILE).read_text()
    # A refused export leaves the earlier one as it was.
    with pytest.raises(sagefit.ExportError, match="LambdaCallback"):
        sagefit.export(model, str(out), overwrite=True, callbacks=[keras.callbacks.LambdaCallback()])
    assert (out / contract.EXTRA_DIR / contract.METADATA_FILE).read_text() == before
    sagefit.export(model, str(out), overwrite=True)
    assert (out / "saved_model.pb").exists()
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(sagefit.ExportError, match="is a link"):  # "link/" emptied the earlier export, then failed
        sagefit.export(model, str(link) + "/", overwrite=True)
    assert (out / "saved_model.pb").exists()
    # A refused export into folders it would make leaves none of them (it
    # left them, empty).
    with pytest.raises(sagefit.ExportError, match="LambdaCallback"):
        sagefit.export(model, str(tmp_path / "new" / "folders" / "m"), callbacks=[keras.callbacks.LambdaCallback()])
    assert not (tmp_path / "new").exists()
    sagefit.export(model, str(tmp_path / "new" / "folders" / "m"))  # made, as before
    assert (tmp_path / "new" / "folders" / "m" / "saved_model.pb").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left
    (tmp_path / "a_file").write_text("")
    with pytest.raises(sagefit.ExportError, match="cannot write the export beside"):
        sagefit.export(model, str(tmp_path / "a_file" / "m"))
    assert (tmp_path / "a_file").read_text() == ""

    with pytest.raises(sagefit.ExportError, match="is not a local folder"):
        sagefit.export(model, "s3://bucket/model")


def test_compile_options_the_export_cannot_carry(tmp_path):
    """use_ema exports the optimizer's finalize step (fit's model ends with
    the moving averages: TestKerasParity/seed_ema); steps_per_execution and
    run_eagerly are named; a metric whose name TensorFlow cannot save is
    refused in a sentence, not TensorFlow's 40-line trace; one callback
    given alone is taken as fit takes it."""
    model = _seed_model()
    model.compile(keras.optimizers.Adam(use_ema=True), "binary_crossentropy")
    meta = sagefit.export(model, str(tmp_path / "ema"))
    assert meta["signatures"]["finalize_variables"] == contract.FINALIZE_VARIABLES
    assert "finalize_variables" not in sagefit.export(_seed_model(), str(tmp_path / "plain"))["signatures"]

    model.compile("adam", "binary_crossentropy", steps_per_execution=8, run_eagerly=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sagefit.export(model, str(tmp_path / "spe"), callbacks=keras.callbacks.TerminateOnNaN())
    said = " ".join(str(w.message) for w in caught)
    assert "compile(steps_per_execution=8) is not carried" in said
    assert "compile(run_eagerly=True) is not carried" in said
    meta = json.loads((tmp_path / "spe" / contract.EXTRA_DIR / contract.METADATA_FILE).read_text())
    assert [c["class"] for c in meta["callbacks"]] == ["TerminateOnNaN"]

    model.compile("adam", "binary_crossentropy", metrics=[keras.metrics.BinaryAccuracy(name="my acc")])
    with pytest.raises(sagefit.ExportError, match=r"metric variable 'my acc/.*' cannot be saved.*rename the metric 'my acc'"):
        sagefit.export(model, str(tmp_path / "name"))

    with pytest.raises(sagefit.ExportError, match="profile_batch or write_steps_per_second"):
        sagefit.export(_seed_model(), str(tmp_path / "tb"), callbacks=[keras.callbacks.TensorBoard(profile_batch=2)])

    # The graph, which Keras writes by default, is named in a warning.
    for write_graph, warned in ((True, True), (False, False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sagefit.export(_seed_model(), str(tmp_path / f"tb_graph_{write_graph}"),
                           callbacks=[keras.callbacks.TensorBoard("/x/tb", write_graph=write_graph)])
        said = " ".join(str(w.message) for w in caught)
        assert ("TensorBoard(write_graph=True)" in said) == warned, said


def test_tracing_errors_of_a_built_model_are_one_sentence(tmp_path):
    """A model fitted once before its export (so already built) met a
    wrong target shape in TensorFlow's 70-line trace."""
    model = _seed_model()
    model.fit(np.zeros((8, 10), np.float32), np.zeros((8, 1), np.float32), verbose=0)
    with pytest.raises(sagefit.ExportError) as e:
        sagefit.export(model, str(tmp_path / "m"), target_shapes=[(3,)])
    assert "\n" not in str(e.value)
    assert "target.shape=(None, 3), output.shape=(None, 1)" in str(e.value)  # the cause, not where it was raised


def test_second_optimizer_in_a_custom_step_is_named(tmp_path):
    """A custom step that applies an optimizer of its own besides the
    compiled one is named in the metadata (the runtime refuses it on
    several processes); Keras's own step names none."""
    build, _ = FAMILIES["custom_step_two_optimizers"]
    meta = sagefit.export(build(), str(tmp_path / "two"))
    assert meta["local_optimizers"] == ["head_optimizer"]
    assert len(meta["gradients"]) == 2  # the first layer's: the ones the compiled optimizer gets
    assert sagefit.export(_seed_model(), str(tmp_path / "seed"))["local_optimizers"] == []


def test_callback_verbose_is_carried(tmp_path):
    """verbose was dropped: an early stop went without Keras's line."""
    meta = sagefit.export(_seed_model(), str(tmp_path / "m"), callbacks=[
        keras.callbacks.EarlyStopping(monitor="loss", verbose=1),
        keras.callbacks.ReduceLROnPlateau(monitor="loss"),
        keras.callbacks.ModelCheckpoint("best.keras", monitor="loss", save_best_only=True, verbose=1)])
    assert [c["config"]["verbose"] for c in meta["callbacks"]] == [1, 0, 1]


def test_refusals_say_what_to_do(tmp_path):
    """A probe's findings: ReduceLROnPlateau over a schedule failed only at
    its first reduction; a refused callback got advice about schedules
    whatever it was; a dtype that is not one met TensorFlow's TypeError; a
    custom sparse loss was not told about target_shapes."""
    model = _seed_model()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.9)
    model.compile(keras.optimizers.Adam(schedule), "binary_crossentropy")
    with pytest.raises(sagefit.ExportError, match="ReduceLROnPlateau sets the optimizer's learning rate, and this optimizer's is a schedule"):
        sagefit.export(model, str(tmp_path / "a"), callbacks=[keras.callbacks.ReduceLROnPlateau()])
    with pytest.raises(sagefit.ExportError, match="sagefit checkpoints with the hyperparameters checkpoint") as e:
        sagefit.export(_seed_model(), str(tmp_path / "b"), callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "bk"))])
    assert "schedule" not in str(e.value)
    with pytest.raises(sagefit.ExportError, match="target_dtypes: 'floaty' .* is not a TensorFlow dtype"):
        sagefit.export(_seed_model(), str(tmp_path / "c"), target_dtypes="floaty")
    # Text targets exported, then failed at the first step in TensorFlow's words.
    with pytest.raises(sagefit.ExportError, match="target_dtypes: 'string' .* a target is numbers"):
        sagefit.export(_seed_model(), str(tmp_path / "c2"), target_dtypes="string")
    # TensorFlow's own dtypes the runtime does not read were refused only when the job opened its data.
    with pytest.raises(sagefit.ExportError, match="target_dtypes: 'bfloat16' .* sagefit reads targets as bool, int8"):
        sagefit.export(_seed_model(), str(tmp_path / "c3"), target_dtypes="bfloat16")

    build, _ = FAMILIES["multiclass"]
    model = build()

    def my_ce(y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)

    model.compile("adam", loss=my_ce)
    with pytest.raises(sagefit.ExportError, match=r"needs target_shapes=\[\(\)\]"):
        sagefit.export(model, str(tmp_path / "d"))
    assert sagefit.export(model, str(tmp_path / "e"), target_shapes=[()])["targets"][0]["shape"] == [None]


def test_sparse_input_is_named(tmp_path):
    """keras.Input(sparse=True) exported as a dense input without a word."""
    inputs = keras.Input((10,), sparse=True)
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("adam", "mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sagefit.export(model, str(tmp_path / "m"))
    assert any("is sparse in Keras; sagefit feeds it dense" in str(w.message) for w in caught)


def test_second_optimizer_found_where_a_gan_keeps_it(tmp_path):
    """A second optimizer is found on a sub-model (a GAN's
    discriminator.optimizer), and a tf-keras model's, which has no apply
    method, is counted instead of failing the export with AttributeError."""
    import subprocess

    out = tmp_path / "tfk"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    subprocess.run([sys.executable, "-m", "sagefit.testing", "custom_step_two_optimizers", str(out),
                    "--rows", "64", "--no-fit", "--no-validation"], check=True, env=env,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    meta = json.loads((out / "model" / contract.EXTRA_DIR / contract.METADATA_FILE).read_text())
    assert meta["legacy_keras"] is True and meta["local_optimizers"] == ["head_optimizer"]

    inputs = keras.Input((10,))
    head = keras.Sequential([keras.Input((16,)), keras.layers.Dense(1, activation="sigmoid")], name="head")
    head.compile(keras.optimizers.SGD(0.1), "binary_crossentropy")

    class Gan(keras.Model):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = self.compute_loss(y=y, y_pred=self(x, training=True))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads[:2], self.trainable_variables[:2])
            head.optimizer.apply(grads[2:], self.trainable_variables[2:])
            return {"loss": loss}

    model = Gan(inputs, head(keras.layers.Dense(16, activation="relu")(inputs)))
    model.compile("adam", "binary_crossentropy")
    assert sagefit.export(model, str(tmp_path / "gan"))["local_optimizers"] == ["head.optimizer"]


def test_load_weights_sets_the_trained_variables(tmp_path):
    """sagefit.load_weights puts a SavedModel's variables (model/1 of a job)
    into the Keras model, so it can be exported for serving alone: here the
    exported values, after the model's own were changed."""
    keras.utils.set_random_seed(3)
    build, _ = FAMILIES["batch_norm"]
    model = build()
    model.fit(np.ones((8, 4), np.float32), np.ones((8, 1), np.float32), verbose=0)  # moves the statistics too
    want = [v.numpy().copy() for v in model.variables]
    sagefit.export(model, str(tmp_path / "m"))
    for v in model.variables:
        v.assign(np.zeros(v.shape, v.dtype))
    sagefit.load_weights(model, str(tmp_path / "m"))
    assert all(np.array_equal(v.numpy(), w) for v, w in zip(model.variables, want))
    model.export(str(tmp_path / "serving"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "serving"))
    assert sorted(served.signatures) == ["serve", "serving_default"]  # inference only
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="holds 6 model variables and this model has 2"):
        sagefit.load_weights(other, str(tmp_path / "m"))


def test_stateful_random_ops_are_listed(tmp_path):
    """A step whose random numbers come from ops that keep their state in
    the op (tf-keras's Dropout, tf.nn.dropout) lists them: another traced
    copy, another session or a resumed job draws another sequence, which
    the runtime then avoids or names. Keras 3's Dropout keeps its seed in a
    variable: nothing to list, and no key for an older runtime to warn of."""
    tf_keras = pytest.importorskip("tf_keras", reason="tf-keras is not installed")
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dropout(0.5), tf_keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    ops = sagefit.export(model, str(tmp_path / "tfk"))["stateful_random_ops"]
    assert ops and all("dropout" in op for op in ops), ops
    k3 = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5), keras.layers.Dense(1)])
    k3.compile(optimizer="sgd", loss="mse")
    assert "stateful_random_ops" not in sagefit.export(k3, str(tmp_path / "k3"))
    # A candidate sampler (tf.nn.sampled_softmax_loss's) keeps its state so too.
    sample = keras.layers.Lambda(lambda x: x + 0.0 * tf.cast(tf.random.log_uniform_candidate_sampler(
        tf.zeros([1, 1], tf.int64), 1, 2, True, 10)[0][0], tf.float32))
    sampled = keras.Sequential([keras.Input((4,)), sample, keras.layers.Dense(1)])
    sampled.compile(optimizer="sgd", loss="mse")
    ops = sagefit.export(sampled, str(tmp_path / "sampled"))["stateful_random_ops"]
    assert any("LogUniformCandidateSampler" in op for op in ops), ops


def test_step_logs_that_are_no_metric_are_recorded(tmp_path):
    # A custom train_step's log that is no metric (a gradient norm) was
    # dropped from the logs and history without a word: fit's epoch logs
    # are then the last step's, and the export records the step's names.
    class Logged(keras.Model):
        def train_step(self, data):
            logs = super().train_step(data)
            return {**logs, "grad_norm": tf.constant(1.5)}

    inputs = keras.Input((10,))
    model = Logged(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["mae"])
    meta = sagefit.export(model, str(tmp_path / "m"))
    assert meta["train_logs"] == ["loss", "mae", "grad_norm"] and "test_logs" not in meta
    # One step per call: the logs are the last step's, which K steps in a
    # call would not return (an epoch's logs were NaN at K=4).
    assert "train_steps" not in meta["signatures"], meta["signatures"]


def test_test_step_of_fewer_metrics_recorded(tmp_path):
    # A test_step that leaves out a tracker only train_step updates: the
    # validation logs are the test step's (the job was refused at load).
    build, _ = FAMILIES["custom_trackers"]
    meta = sagefit.export(build(), str(tmp_path / "m"))
    assert meta["metrics"] == ["loss", "mae", "grad_norm"] and meta["test_logs"] == ["loss", "mae"]
    assert "train_logs" not in meta


@pytest.mark.parametrize("shapes, dtypes, words", [
    ({"kind": ()}, None, r"target_shapes is a dict by output name, but the model's outputs are kind, price; it leaves out price"),
    (None, {"kind": "int32", "price": "float32", "prce": "float64"}, r"target_dtypes is a dict by output name, .*; it names prce, which is none"),
    ([()], None, r"target_shapes lists 1 entries, one per output, but the model has 2 \(kind, price\)"),
    (None, ["int64", "float32", "int8"], r"target_dtypes lists 3 entries, one per output, but the model has 2"),
    ([(), (1.5,)], None, r"target_shapes: \(1\.5,\) \(output price\) is not the shape of one example"),
])
def test_per_output_targets_checked(tmp_path, shapes, dtypes, words):
    # A raw KeyError or IndexError, or an entry read in part and the rest
    # dropped.
    build, _ = FAMILIES["two_heads"]
    with pytest.raises(sagefit.ExportError, match=words):
        sagefit.export(build(), str(tmp_path / "m"), target_shapes=shapes, target_dtypes=dtypes)


def test_per_output_dtype_objects(tmp_path):
    # A list of dtype objects was read as one dtype and refused.
    build, _ = FAMILIES["two_heads"]
    meta = sagefit.export(build(), str(tmp_path / "m"), target_dtypes=[np.int64, tf.float32])
    assert [t["dtype"] for t in meta["targets"]] == ["int64", "float32"]


def test_a_batch_size_the_model_was_built_with_is_not_kept(tmp_path):
    # It does not bind fit (any batch size, a last partial batch); the
    # steps took batches of it only, and the job failed at the first other.
    fixed = keras.Sequential([keras.Input((6,), batch_size=16), keras.layers.Dense(1)])
    fixed.compile(optimizer="sgd", loss="mse")
    assert sagefit.export(fixed, str(tmp_path / "fixed"))["inputs"][0]["shape"] == [None, 6]


def test_models_sagefit_cannot_run_are_refused_at_export(tmp_path):
    # They exported, then the job failed: a stateful RNN at the first
    # partial batch, tf.py_function with TensorFlow's kernel dump.
    stateful = keras.Sequential([keras.Input((3, 2), batch_size=16), keras.layers.LSTM(4, stateful=True), keras.layers.Dense(1)])
    stateful.compile(optimizer="sgd", loss="mse")
    with pytest.raises(sagefit.ExportError, match=r"layer lstm\w* is stateful"):
        sagefit.export(stateful, str(tmp_path / "stateful"))

    class Py(keras.layers.Layer):
        def call(self, x):
            y = tf.py_function(lambda a: a * 2, [x], tf.float32)
            y.set_shape(x.shape)
            return y

    py = keras.Sequential([keras.Input((4,)), Py(), keras.layers.Dense(1)])
    py.compile(optimizer="sgd", loss="mse")
    with pytest.raises(sagefit.ExportError, match=r"the train or test step runs Python \(tf\.py_function or tf\.numpy_function: \S+EagerPyFunc\), "):
        sagefit.export(py, str(tmp_path / "py"))

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        scoped = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        scoped.compile(optimizer="sgd", loss="mse")
    with pytest.raises(sagefit.ExportError, match=r"built or compiled under a tf\.distribute strategy"):
        sagefit.export(scoped, str(tmp_path / "scoped"))
    with pytest.raises(sagefit.ExportError, match=r"takes a compiled Keras model, not NoneType"):
        sagefit.export(None, str(tmp_path / "none"))


def test_load_weights_names_a_folder_that_is_no_export(tmp_path):
    model = _seed_model()
    sagefit.export(model, str(tmp_path / "model" / "1"))
    with pytest.raises(ValueError, match=r"is not a SavedModel sagefit wrote or exported: .*give .*model/1"):
        sagefit.load_weights(model, str(tmp_path / "model"))
    with pytest.raises(ValueError, match=r"takes the Keras model first, not str"):
        sagefit.load_weights(str(tmp_path / "model" / "1"), model)


def test_loss_reductions_recorded(tmp_path):
    # Several processes weigh each one's gradient by its rows, right for a
    # mean over the batch: the runtime refuses a sum there (it trained each
    # step 1/N as far, without a word) and names the others.
    model = _seed_model()
    model.compile(optimizer="sgd", loss=keras.losses.BinaryCrossentropy(reduction="sum"))
    meta = sagefit.export(model, str(tmp_path / "sum"))
    assert meta["loss_reductions"] == {meta["outputs"][0]: "sum"}
    model = _seed_model()
    model.compile(optimizer="sgd", loss=keras.losses.BinaryCrossentropy(reduction=None))  # the rows' losses, summed
    meta = sagefit.export(model, str(tmp_path / "none"))
    assert meta["loss_reductions"] == {meta["outputs"][0]: "sum"}
    model = _seed_model()
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    assert "loss_reductions" not in sagefit.export(model, str(tmp_path / "mean"))


def test_loss_share_only_where_the_optimizer_scales_the_loss(tmp_path):
    """Where the optimizer scales the loss (a LossScaleOptimizer, a
    loss_scale_factor), the export lets several processes set each one's
    share of the global batch's loss (MultiWorkerMirroredStrategy divides
    each replica's loss), and a share of 0.5 makes exactly half the
    gradient; elsewhere, and for a custom step that never asks the
    optimizer to scale, there is no share to set. It is no variable of
    the contract (nothing checkpoints it)."""
    meta = sagefit.export(FAMILIES["mixed_float16"][0](), str(tmp_path / "lso"))
    assert meta["signatures"]["set_loss_share"] == contract.SET_LOSS_SHARE
    assert not [v for v in meta["variables"] if "loss_share" in v["name"]]
    assert "set_loss_share" not in sagefit.export(_seed_model(), str(tmp_path / "plain"))["signatures"]

    class OwnStep(keras.Sequential):
        def train_step(self, data):
            x, y = data[0], data[1]
            with tf.GradientTape() as tape:
                loss = self.compute_loss(x, y, self(x, training=True))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    own = OwnStep([keras.Input((10,)), keras.layers.Dense(1, activation="sigmoid")])
    own.compile(keras.optimizers.Adam(loss_scale_factor=4.0), "binary_crossentropy")
    assert "set_loss_share" not in sagefit.export(own, str(tmp_path / "own"))["signatures"]

    model = _seed_model()
    model.compile(keras.optimizers.Adam(loss_scale_factor=4.0), "binary_crossentropy")
    meta = sagefit.export(model, str(tmp_path / "factor"))
    loaded = tf.saved_model.load(str(tmp_path / "factor"))
    rng = np.random.default_rng(0)
    feeds = {meta["inputs"][0]["key"]: tf.constant(rng.random((8, 10), dtype=np.float32)),
             meta["targets"][0]["key"]: tf.constant(rng.integers(0, 2, (8, 1)).astype(np.float32))}
    if meta["sample_weights"]:
        feeds[meta["sample_weights"][0]["key"]] = tf.ones([8])
    grad = loaded.signatures[meta["signatures"]["compute_gradients_weighted"]]
    whole = grad(**feeds)[contract.GRADIENTS].numpy()
    said = loaded.signatures[contract.SET_LOSS_SHARE](**{contract.LOSS_SHARE: tf.constant(0.5)})
    assert said[contract.LOSS_SHARE].numpy() == 0.5
    half = grad(**feeds)[contract.GRADIENTS].numpy()
    assert np.abs(whole).max() > 0 and np.array_equal(half, whole * 0.5)


def test_sparse_gradients_gathered_train_as_one_batch(tmp_path):
    """An Embedding's gradient is sparse, and Keras's Adam applies its rows
    one by one (the second moment adds each lookup's square): several
    processes gather the rows each looked up (compute_sparse_gradients),
    and the update with both halves' rows (apply_sparse_gradients) is one
    train step on the whole batch, where their dense sum is not."""
    keras.utils.set_random_seed(3)
    build, data = FAMILIES["embedding"]
    meta = sagefit.export(build(), str(tmp_path / "m"))
    assert meta["sparse_gradients"] == [meta["gradients"][0]["name"]]
    assert {"compute_sparse_gradients", "apply_sparse_gradients"} <= set(meta["signatures"])
    s = meta["signatures"]
    inputs, labels = data(64, np.random.default_rng(0))
    x, y = inputs["train"], labels["labels"].reshape(-1, 1)

    def feeds(a, b):
        return {meta["inputs"][0]["key"]: tf.constant(x[a:b]), meta["targets"][0]["key"]: tf.constant(y[a:b]),
                meta["sample_weights"][0]["key"]: tf.ones([b - a])}

    one, two, dense = (tf.saved_model.load(str(tmp_path / "m")) for _ in range(3))
    for lo in (0, 32):
        one.signatures[s["train_step_weighted"]](**feeds(lo, lo + 32))
        halves = [two.signatures[s["compute_sparse_gradients"]](**feeds(lo + h, lo + h + 16)) for h in (0, 16)]
        two.signatures[s["apply_sparse_gradients"]](
            gradients=tf.add_n([h[contract.GRADIENTS] * 0.5 for h in halves]),
            sparse_indices=tf.concat([h[contract.SPARSE_INDICES] for h in halves], 0),
            sparse_values=tf.concat([h[contract.SPARSE_VALUES] * 0.5 for h in halves], 0),
            sparse_counts=tf.add_n([h[contract.SPARSE_COUNTS] for h in halves]))
        grads = [dense.signatures[s["compute_gradients_weighted"]](**feeds(lo + h, lo + h + 16))[contract.GRADIENTS]
                 for h in (0, 16)]
        dense.signatures[s["apply_gradients"]](gradients=(grads[0] + grads[1]) * 0.5)
    table = meta["variables"][0]["key"]
    want, got, summed = (m.signatures[s["read_variables"]]()[table].numpy() for m in (one, two, dense))
    assert np.array_equal(got, want)
    assert np.abs(summed - want).max() > 1e-4  # the test can tell
