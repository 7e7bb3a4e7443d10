"""Model families, data and Keras reference runs for sagefit's tests and benchmarks.

``python -m sagefit.testing FAMILY OUT [--epochs N] [--batch-size B] [--rows N]``
writes, under OUT:

- ``model/``: the training SavedModel exported before any training,
- ``train/`` and ``validation/``: channel data as ``.npy`` files,
- ``reference.json``: what Keras ``model.fit`` reports on the same data from the
  same initial weights (shuffle off), its final weights and predictions.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _keras():
    # TF_USE_LEGACY_KERAS=1 selects tf-keras (Keras 2), as it does for tf.keras.
    if os.environ.get("TF_USE_LEGACY_KERAS", "") in ("1", "true", "True"):
        import tf_keras

        return tf_keras
    import keras

    return keras


def seed_mlp():
    """The seed article's model: Dense(16, relu) -> Dense(1, sigmoid)."""
    keras = _keras()
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def seed_ema():
    """The seed model with Adam keeping moving averages of the weights
    (use_ema=True), which fit copies into the model at its end."""
    keras = _keras()
    model = seed_mlp()
    model.compile(optimizer=keras.optimizers.Adam(use_ema=True, ema_momentum=0.9),
                  loss="binary_crossentropy", metrics=["accuracy"])
    return model


def seed_nadam():
    """The seed model with Nadam: tf-keras's counts the traces of its
    update in a Python int that each trace bakes into the step."""
    keras = _keras()
    model = seed_mlp()
    model.compile(optimizer=keras.optimizers.Nadam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def seed_schedule():
    """The seed model with Adam on an ExponentialDecay schedule."""
    keras = _keras()
    model = seed_mlp()
    rate = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=3, decay_rate=0.5)
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def seed_xla():
    """The seed model compiled with jit_compile=True: fit runs the train
    step XLA-compiled, and so does sagefit."""
    model = seed_mlp()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"], jit_compile=True)
    return model


def cnn_xla():
    """The small CNN compiled with jit_compile=True."""
    model = small_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=True)
    return model


def seed_weighted():
    """The seed model with accuracy among the weighted_metrics too."""
    model = seed_mlp()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"],
                  weighted_metrics=["accuracy"])
    return model


def seed_wide():
    """The seed model with 32 hidden units: same data, another fingerprint."""
    keras = _keras()
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def old_style_branch():
    """The seed model behind a layer that passes its input through TF1's
    Switch and Merge (old-style control flow, a predicate the graph cannot
    fold): TensorFlow's single-threaded executor refuses such a step, so a
    move there fails on its first call and training must go on where it
    was, that call run once."""
    import tensorflow as tf

    keras = _keras()

    class OldStyleBranch(keras.layers.Layer):
        def call(self, x):
            when_false, when_true = tf.raw_ops.Switch(data=x, pred=tf.reduce_all(tf.math.is_finite(x)))
            return tf.raw_ops.Merge(inputs=[when_false, when_true])[0]

    model = keras.Sequential(
        [
            keras.Input((10,)),
            OldStyleBranch(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def wide():
    """Logistic regression on 4096 features: rows of 16 KiB, so data sets of
    gigabytes have few enough rows to train through in seconds."""
    keras = _keras()
    model = keras.Sequential([keras.Input((4096,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def wide_data(rows, rng):
    x = rng.random((rows, 4096), dtype=np.float32)
    y = rng.integers(0, 2, rows).astype(np.float32)
    return {"train": x}, {"labels": y}


def seed_data(rows, rng):
    """The seed article's data: 10 uniform features, a random 0/1 label."""
    x = rng.random((rows, 10), dtype=np.float32)
    y = rng.integers(0, 2, rows).astype(np.float32)
    return {"train": x}, {"labels": y}


def multiclass():
    """Softmax over 4 classes, SGD with momentum, integer labels."""
    keras = _keras()
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def multiclass_data(rows, rng):
    x = rng.normal(size=(rows, 12)).astype(np.float32)
    y = (np.argmax(x[:, :4], axis=1)).astype(np.int64)
    return {"train": x}, {"labels": y}


def two_inputs():
    """A functional model with two named inputs and a regression target."""
    keras = _keras()
    a = keras.Input((5,), name="a")
    b = keras.Input((3,), name="b")
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.Dense(8, activation="relu")(h)
    out = keras.layers.Dense(1, name="price")(h)
    model = keras.Model([a, b], out)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    return model


def two_inputs_data(rows, rng):
    xa = rng.normal(size=(rows, 5)).astype(np.float32)
    xb = rng.normal(size=(rows, 3)).astype(np.float32)
    y = (xa.sum(axis=1, keepdims=True) - 2 * xb[:, :1]).astype(np.float32)
    return {"a": xa, "b": xb}, {"price": y}


def _two_heads(keras, second, units):
    """Input x of 6 features, a hidden layer, and two heads on it: "kind"
    (3 classes) and a Dense of units named second."""
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(16, activation="relu")(x)
    kind = keras.layers.Dense(3, activation="softmax", name="kind")(h)
    return x, kind, keras.layers.Dense(units, name=second)(h)


def two_heads(weighted=False):
    """Two outputs with their own losses: a sparse classifier head and a
    2-unit regression head, with loss_weights; with weighted, a weighted
    metric on each head."""
    keras = _keras()
    x, kind, price = _two_heads(keras, "price", 2)
    model = keras.Model(x, [kind, price])
    metrics = {"weighted_metrics": {"kind": ["accuracy"], "price": ["mae"]}} if weighted else {"metrics": {"kind": ["accuracy"]}}
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss={"kind": "sparse_categorical_crossentropy", "price": "mse"},
        loss_weights={"kind": 1.0, "price": 0.5},
        **metrics,
    )
    return model


def two_heads_data(rows, rng):
    x = rng.normal(size=(rows, 6)).astype(np.float32)
    kind = np.argmax(x[:, :3], axis=1).astype(np.int64)
    price = np.stack([x[:, 3] + x[:, 4], x[:, 5] - x[:, 0]], axis=1).astype(np.float32)
    return {"x": x}, {"kind": kind, "price": price}


def untrained_head():
    """Two outputs, a loss for one (None for the other, an embedding the
    model serves): the other head's Dense gets no gradient, and fit warns
    and trains the rest."""
    keras = _keras()
    x, kind, emb = _two_heads(keras, "emb", 4)
    model = keras.Model(x, [kind, emb])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=["sparse_categorical_crossentropy", None],
                  metrics=[["accuracy"], []])
    return model


def untrained_head_data(rows, rng):
    """fit asks for a target per output, one without a loss too."""
    x = rng.normal(size=(rows, 6)).astype(np.float32)
    return {"x": x}, {"kind": np.argmax(x[:, :3], axis=1).astype(np.int64),
                      "emb": np.zeros((rows, 4), np.float32)}


def _seed_shaped(keras, model_class):
    """The seed MLP's layers as a functional model of model_class (a
    keras.Model with its own train step), compiled as the seed model is."""
    inputs = keras.Input((10,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(h)
    model = model_class(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def _update_metrics(model, loss, y, y_pred):
    """What the Keras 3 guide's custom step does with its metrics: the loss
    tracker takes the loss, the others the targets and predictions; the
    logs are every metric's result."""
    for metric in model.metrics:
        if metric.name == "loss":
            metric.update_state(loss)
        else:
            metric.update_state(y, y_pred)
    return {m.name: m.result() for m in model.metrics}


def _custom_step_model(update_last_only, count_steps=None):
    """The Keras 3 guide's custom train_step ("Customizing what happens in
    fit()"): compute_loss, optimizer.apply, metrics updated in the step;
    with update_last_only, a step that leaves the first layer alone; with
    count_steps, a step that keeps state of its own that Keras does not
    track (a count of the steps run, which weighs the loss), in a
    tf.Variable ("variable": state a checkpoint, a resume or a move must
    carry like the model's) or in a tf.lookup MutableHashTable ("table")."""
    import tensorflow as tf

    keras = _keras()

    class CustomModel(keras.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if count_steps == "variable":
                self.steps_seen = tf.Variable(0.0, trainable=False, name="steps_seen")
            if count_steps == "table":
                self.seen = tf.lookup.experimental.MutableHashTable(tf.int32, tf.float32, 0.0, name="steps_seen")

        def count(self):
            if count_steps == "variable":
                self.steps_seen.assign_add(1.0)
                return self.steps_seen  # read in the tape, after the update
            key = tf.constant([0])
            seen = tf.reshape(self.seen.lookup(key), [1]) + 1.0
            self.seen.insert(key, seen)
            return seen[0]

        def train_step(self, data):
            x, y = data
            if count_steps:
                seen = self.count()
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred)
                if count_steps:
                    loss = loss * (1.0 + 0.05 * seen)
            variables = self.trainable_variables[2:] if update_last_only else self.trainable_variables
            gradients = tape.gradient(loss, variables)
            self.optimizer.apply(gradients, variables)
            return _update_metrics(self, loss, y, y_pred)

    return _seed_shaped(keras, CustomModel)


def custom_step():
    return _custom_step_model(False)


def custom_step_partial():
    return _custom_step_model(True)


def custom_step_state():
    return _custom_step_model(False, count_steps="variable")


def custom_step_table():
    return _custom_step_model(False, count_steps="table")


def custom_trackers():
    """The Keras 3 guide's steps with trackers of their own ("Customizing
    what happens in fit()"): a loss and an MAE tracker, and one of the
    gradient's norm that only train_step updates; test_step returns the
    loss and the MAE, so fit's validation logs are those two (Keras takes a
    step's logs where their names differ from the metrics')."""
    import tensorflow as tf

    keras = _keras()

    class TrackedModel(keras.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.mae_metric = keras.metrics.MeanAbsoluteError(name="mae")
            self.norm_tracker = keras.metrics.Mean(name="grad_norm")
            self.bce = keras.losses.BinaryCrossentropy()  # labels (N,) or (N, 1) alike

        @property
        def metrics(self):
            return [self.loss_tracker, self.mae_metric, self.norm_tracker]

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.bce(y, y_pred)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            self.loss_tracker.update_state(loss)
            self.mae_metric.update_state(y, y_pred)
            self.norm_tracker.update_state(tf.linalg.global_norm(grads))
            return {m.name: m.result() for m in self.metrics}

        def test_step(self, data):
            x, y = data
            y_pred = self(x, training=False)
            self.loss_tracker.update_state(self.bce(y, y_pred))
            self.mae_metric.update_state(y, y_pred)
            return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

    inputs = keras.Input((10,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    model = TrackedModel(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile(optimizer="adam")
    return model


def custom_logs():
    """A custom train_step that returns its step's own values, not metrics
    (the loss of the batch and the gradient's norm; the compiled loss
    tracker is never updated): fit's epoch logs are the last step's."""
    import tensorflow as tf

    keras = _keras()

    class LoggingModel(keras.Model):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = self.compute_loss(y=y, y_pred=self(x, training=True))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            return {"loss": loss, "grad_norm": tf.linalg.global_norm(grads)}

    return _seed_shaped(keras, LoggingModel)


def custom_step_two_optimizers():
    """A custom train_step that applies a second optimizer of its own to the
    last layer (as a GAN's step applies two): on one process it trains as
    fit does; sagefit all-reduces only the compiled optimizer's gradients,
    so it refuses it on several."""
    import tensorflow as tf

    keras = _keras()

    class TwoOptimizers(keras.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.head_optimizer = keras.optimizers.SGD(0.1)

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred)
            variables = self.trainable_variables
            gradients = tape.gradient(loss, variables)
            # apply_gradients: tf-keras's optimizers have no apply.
            self.optimizer.apply_gradients(zip(gradients[:2], variables[:2]))
            self.head_optimizer.apply_gradients(zip(gradients[2:], variables[2:]))
            return _update_metrics(self, loss, y, y_pred)

    return _seed_shaped(keras, TwoOptimizers)


def custom_step_keras2():
    """A custom train_step as tf-keras (Keras 2) guides write one
    (compiled_loss, optimizer.apply_gradients, compiled_metrics), its class
    defined here, outside tf_keras, as in a user's script; build it with
    tf-keras (the "tf_keras:" fixture prefix)."""
    import tensorflow as tf

    keras = _keras()

    class Keras2Step(keras.Model):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compiled_loss(y, y_pred)
            gradients = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
            self.compiled_metrics.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    return _seed_shaped(keras, Keras2Step)


def dropout_mlp():
    """Dropout between dense layers: the step draws its masks from Keras's
    seed generator state, exported with the model."""
    keras = _keras()
    model = keras.Sequential([
        keras.Input((10,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def embedding():
    """An Embedding of integer ids, pooled: sparse gradients made dense."""
    keras = _keras()
    model = keras.Sequential([
        keras.Input((8,), dtype="int32"),
        keras.layers.Embedding(50, 4),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def embedding_clipnorm():
    """embedding with Adam clipping each gradient's norm: the Embedding's
    sparse gradient is clipped row by row in Keras, summed first over
    several processes (a multi-host job says so)."""
    keras = _keras()
    model = embedding()
    model.compile(optimizer=keras.optimizers.Adam(clipnorm=0.05), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def embedding_data(rows, rng):
    ids = rng.integers(0, 50, (rows, 8)).astype(np.int32)
    y = (ids.sum(axis=1) > 200).astype(np.float32)
    return {"train": ids}, {"labels": y}


def embedding_same_names():
    """Two towers with an Embedding of one name each, one regularized (its
    gradient dense): two gradients named emb/embeddings, one of them rows."""
    keras = _keras()

    def tower(name, regularized):
        ids = keras.Input((8,), dtype="int32")
        reg = keras.regularizers.l2(0.01) if regularized else None
        e = keras.layers.Embedding(50, 4, name="emb", embeddings_regularizer=reg)(ids)
        return keras.Model(ids, keras.layers.GlobalAveragePooling1D()(e), name=name)

    a = keras.Input((8,), dtype="int32", name="a")
    b = keras.Input((8,), dtype="int32", name="b")
    h = keras.layers.Concatenate()([tower("tower_a", False)(a), tower("tower_b", True)(b)])
    model = keras.Model([a, b], keras.layers.Dense(1, activation="sigmoid", name="out")(h))
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def embedding_same_names_data(rows, rng):
    a = rng.integers(0, 50, (rows, 8)).astype(np.int32)
    b = rng.integers(0, 50, (rows, 8)).astype(np.int32)
    y = ((a.sum(axis=1) + b.sum(axis=1)) > 400).astype(np.float32)
    return {"a": a, "b": b}, {"out": y}


def seed_loss_scale_factor():
    """The seed model with Adam scaling its loss by a fixed 1e6 (Keras 3's
    loss_scale_factor): its gradients come out a million times their size
    until the update divides the factor out."""
    keras = _keras()
    model = seed_mlp()
    model.compile(optimizer=keras.optimizers.Adam(loss_scale_factor=1e6), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


def _recurrent(layer):
    keras = _keras()
    model = keras.Sequential([
        keras.Input((6, 3)),
        getattr(keras.layers, layer)(8),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.RMSprop(0.01), loss="mse", metrics=["mae"])
    return model


def lstm():
    """An LSTM over 6 steps of 3 features."""
    return _recurrent("LSTM")


def gru():
    """A GRU over 6 steps of 3 features."""
    return _recurrent("GRU")


def rnn_dropout():
    """A SimpleRNN with dropout on its inputs: the masks are drawn inside
    the RNN's loop (tf-keras's with a stateful random op)."""
    keras = _keras()
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.SimpleRNN(8, dropout=0.2), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    return model


def sequence_data(rows, rng):
    x = rng.normal(size=(rows, 6, 3)).astype(np.float32)
    y = x[:, :, 0].sum(axis=1, keepdims=True).astype(np.float32)
    return {"train": x}, {"labels": y}


def normalized():
    """An adapted Normalization layer in front: its mean and variance are
    non-trainable state that training leaves alone."""
    keras = _keras()
    norm = keras.layers.Normalization()
    norm.adapt(np.random.default_rng(9).normal(3.0, 2.0, size=(256, 10)).astype(np.float32))
    model = keras.Sequential([keras.Input((10,)), norm, keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def normalized_big_constant():
    """normalized with a layer whose step captures a float tensor of 1.2 MB,
    more than a session call feeds: it stays a constant, while the
    Normalization's small ones are still fed (it adds their mean, 0)."""
    keras = _keras()

    class AddMeanOfBig(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.big = keras.ops.convert_to_tensor(np.zeros(300_000, np.float32))

        def call(self, x):
            return x + keras.ops.mean(self.big)

    model = normalized()
    model = keras.Sequential([keras.Input((10,)), model.layers[0], AddMeanOfBig(), *model.layers[1:]])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def dropout_masks():
    """Dropout then a Dense layer of ones that does not learn (learning rate
    0), on rows of ones against zeros: each step's loss is its dropout
    mask's alone. Built with tf-keras (its Dropout draws with a stateful
    random op), it shows where a job draws a mask twice or skips one."""
    keras = _keras()
    model = keras.Sequential([
        keras.Input((16,)), keras.layers.Dropout(0.5),
        keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return model


def dropout_masks_data(rows, rng):
    """Rows of ones, labels of zeros."""
    return {"train": np.ones((rows, 16), np.float32)}, {"labels": np.zeros((rows, 1), np.float32)}


def _mixed_seed(policy, optimizer="adam"):
    """The seed model under a mixed precision policy: float32 variables,
    the last layer float32."""
    keras = _keras()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = keras.Sequential([
            keras.Input((10,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid", dtype="float32"),
        ])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(optimizer=optimizer() if callable(optimizer) else optimizer, loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


def mixed_bfloat16():
    """The seed model under the mixed_bfloat16 policy: bfloat16 compute."""
    return _mixed_seed("mixed_bfloat16")


def mixed_float16():
    """The seed model under the mixed_float16 policy: compile wraps Adam in
    a LossScaleOptimizer, which steps with its inner optimizer's learning
    rate."""
    return _mixed_seed("mixed_float16")


def mixed_float16_overflow():
    """mixed_float16 with a loss scale far too large (2**24): the first
    steps' float16 gradients overflow, and the LossScaleOptimizer skips
    them, halving its scale until they do not."""
    keras = _keras()

    def optimizer():
        return keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam(), initial_scale=2.0**24)

    return _mixed_seed("mixed_float16", optimizer)


def per_pixel():
    """A small convolutional autoencoder: its loss is one value per pixel,
    which Keras weighs by weights of that shape, not one per row."""
    keras = _keras()
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(1, 3, padding="same"),
    ])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    return model


def per_pixel_data(rows, rng):
    x = rng.random((rows, 8, 8, 1), dtype=np.float32)
    return {"train": x}, {"labels": np.sqrt(x)}


def per_timestep():
    """A class per time step of a masked sequence (ids 0 are padding): a
    sparse loss of one value per step, the mask weighing them."""
    keras = _keras()
    model = keras.Sequential([
        keras.Input((8,), dtype="int32"),
        keras.layers.Embedding(20, 4, mask_zero=True),
        keras.layers.SimpleRNN(6, return_sequences=True),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def per_timestep_data(rows, rng):
    ids = rng.integers(1, 20, (rows, 8)).astype(np.int32)
    ids[:, 6:] *= rng.integers(0, 2, (rows, 1)).astype(np.int32)  # some rows end in padding
    return {"train": ids}, {"labels": (ids % 3).astype(np.int64)}


def dict_io():
    """A model built on dicts, as fit takes them: two inputs by name (keys
    in another order than the model's), a class and a price by name, a
    loss and metrics per output by key."""
    keras = _keras()
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    kind = keras.layers.Dense(3, activation="softmax", name="kind_head")(h)
    price = keras.layers.Dense(1, name="price_head")(h)
    model = keras.Model({"b": b, "a": a}, {"kind": kind, "price": price})
    model.compile(optimizer="adam", loss={"kind": "sparse_categorical_crossentropy", "price": "mse"},
                  loss_weights={"kind": 1.0, "price": 0.5}, metrics={"kind": ["accuracy"], "price": ["mae"]})
    return model


def dict_io_data(rows, rng):
    a = rng.random((rows, 3), dtype=np.float32)
    b = rng.random((rows, 2), dtype=np.float32)
    kind = (a.sum(axis=1) * 1.5).astype(np.int64) % 3
    return {"a": a, "b": b}, {"kind": kind, "price": (a[:, :1] + b[:, :1]).astype(np.float32)}


def add_loss_only():
    """An autoencoder compiled without a loss: its layer adds the
    reconstruction error (add_loss), and fit takes inputs alone."""
    import tensorflow as tf

    keras = _keras()

    class Reconstruction(keras.layers.Layer):
        def call(self, inputs):
            x, out = inputs
            self.add_loss(tf.reduce_mean(tf.square(x - out)))  # tf ops: tf-keras has no keras.ops
            return out

    x = keras.Input((10,))
    h = keras.layers.Dense(4, activation="relu")(x)
    model = keras.Model(x, Reconstruction()([x, keras.layers.Dense(10)(h)]))
    model.compile(optimizer="adam")
    return model


def add_loss_only_data(rows, rng):
    return {"train": rng.random((rows, 10), dtype=np.float32)}, {}


def _own_loss_step_model(targets, own_test_step, weighted=False):
    """A custom train_step on a model compiled without a loss, computing a
    loss of its own, as keras.io's VAE and its "Customizing what happens
    in fit()" guide's lower-level example write it: with targets, from
    (x, y); without, from x alone, as fit(x) hands it the batch (an
    autoencoder, its input its target). Built on keras.Input through the
    class's own __init__ (a functional subclass). With own_test_step, one of
    its own; without, Keras's, which has no loss to compute (fit fails on
    validation data). weighted: the step unpacks (x, y, sample_weight) and
    weighs each row's loss, so it takes sample weights."""
    import tensorflow as tf

    keras = _keras()

    class OwnLossModel(keras.Model):
        def __init__(self, **kwargs):
            x = keras.Input((10,), name="x")
            h = keras.layers.Dense(4, activation="tanh")(x)
            super().__init__(x, keras.layers.Dense(10, name="y")(h), **kwargs)
            self.loss_tracker = keras.metrics.Mean(name="loss")

        @property
        def metrics(self):
            return [self.loss_tracker]

        def loss_of(self, data, training):
            if weighted:
                x, y, w = keras.utils.unpack_x_y_sample_weight(data)
                per_row = tf.reduce_mean(tf.square(self(x, training=training) - y), axis=-1)
                return tf.reduce_mean(per_row if w is None else per_row * w)
            x, y = data if targets else (data, data)
            return tf.reduce_mean(tf.square(self(x, training=training) - y))

        def train_step(self, data):
            with tf.GradientTape() as tape:
                loss = self.loss_of(data, True)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            self.loss_tracker.update_state(loss)
            return {"loss": self.loss_tracker.result()}

        if own_test_step:
            def test_step(self, data):
                self.loss_tracker.update_state(self.loss_of(data, False))
                return {"loss": self.loss_tracker.result()}

    model = OwnLossModel()
    model.compile(optimizer="adam")
    return model


def own_loss_inputs_alone():
    return _own_loss_step_model(targets=False, own_test_step=True)


def own_loss_inputs_alone_data(rows, rng):
    return {"x": rng.random((rows, 10), dtype=np.float32)}, {}


def own_loss_no_test_step():
    return _own_loss_step_model(targets=True, own_test_step=False)


def own_loss_no_test_step_weighted():
    return _own_loss_step_model(targets=True, own_test_step=False, weighted=True)


def own_loss_no_test_step_data(rows, rng):
    x = rng.random((rows, 10), dtype=np.float32)
    return {"x": x}, {"y": np.flip(x, axis=1).copy()}


def small_cnn():
    """A compute-heavier model for benchmarks: a small CNN on 28x28 images."""
    keras = _keras()
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def small_cnn_data(rows, rng):
    x = rng.random((rows, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, rows).astype(np.int64)
    return {"train": x}, {"labels": y}


def mobilenet_v2():
    """keras.applications.MobileNetV2 on 32x32 images, 10 classes, untrained:
    52 BatchNormalization layers."""
    keras = _keras()
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def mobilenet_v2_data(rows, rng):
    x = rng.random((rows, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, rows).astype(np.int64)
    return {"train": x}, {"labels": y}


def batch_norm():
    """BatchNormalization then a linear head: moving statistics to check."""
    keras = _keras()
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def batch_norm_synchronized():
    """batch_norm with BatchNormalization(synchronized=True)."""
    keras = _keras()
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.BatchNormalization(synchronized=True),
         keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def batch_norm_data(rows, rng):
    """Blocks of 16 rows alternating between two distributions, around 0 and
    around 10: with batch 16 per host and shuffle off, host 0 of 2 sees only
    the first and host 1 only the second."""
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    x[(np.arange(rows) // 16) % 2 == 1] += 10
    y = (0.1 * x.sum(axis=1, keepdims=True) + rng.normal(size=(rows, 1))).astype(np.float32)
    return {"train": x}, {"labels": y}


# family -> (build and compile the model, make rows of data)
_COLORS = ["red", "green", "blue", "yellow", "purple"]
_WORDS = ["the", "café", "naïve", "fast", "slow", "dog", "cat", "sees", "runs", "über", "a", "big"]


def string_lookup():
    """A StringLookup of colour names (one-hot, an OOV bucket) into a small
    MLP: a lookup table tracked with the model, bytes ('S') input files."""
    keras = _keras()
    model = keras.Sequential([
        keras.Input((1,), dtype="string"),
        keras.layers.StringLookup(vocabulary=_COLORS[:4], output_mode="one_hot"),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def string_lookup_data(rows, rng):
    idx = rng.integers(0, len(_COLORS), rows)
    x = np.array([_COLORS[i].encode() for i in idx], dtype="S6").reshape(rows, 1)
    y = (idx % 2 == 0).astype(np.float32)
    return {"train": x}, {"labels": y}


def text_vectorization():
    """TextVectorization (adapted vocabulary, sequences of 6 tokens) into an
    Embedding: sentences as unicode ('U') files with non-ASCII words."""
    keras = _keras()
    vec = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=6)
    vec.adapt(_sentences(200, np.random.default_rng(7)))
    model = keras.Sequential([
        keras.Input((1,), dtype="string"),
        vec,
        keras.layers.Embedding(20, 4),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def _sentences(rows, rng):
    lengths = rng.integers(1, 9, rows)
    return np.array([" ".join(_WORDS[j] for j in rng.integers(0, len(_WORDS), n)) for n in lengths])


def text_vectorization_data(rows, rng):
    x = _sentences(rows, rng)
    y = np.array([("café" in s) or ("über" in s) for s in x], dtype=np.float32)
    return {"train": x.reshape(rows, 1)}, {"labels": y}


def categorical():
    """IntegerLookup of an int64 code beside Hashing of a string, one-hot,
    concatenated: two lookup-style inputs of two dtypes."""
    keras = _keras()
    code = keras.Input((1,), dtype="int64", name="code")
    color = keras.Input((1,), dtype="string", name="color")
    a = keras.layers.IntegerLookup(vocabulary=[3, 7, 11, 19], output_mode="one_hot")(code)
    b = keras.layers.Hashing(num_bins=8, output_mode="one_hot")(color)
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.Dense(8, activation="relu")(h)
    out = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model([code, color], out)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def categorical_data(rows, rng):
    code = rng.choice([3, 7, 11, 19, 23], rows).astype(np.int64).reshape(rows, 1)
    color = np.array(rng.choice(_COLORS, rows), dtype="<U6").reshape(rows, 1)
    y = ((code[:, 0] > 10) ^ (color[:, 0] == "red")).astype(np.float32)
    return {"code": code, "color": color}, {"labels": y}


def seed_own_metric():
    """The seed model with a metric class of its own whose state is a sum
    (predictions of at least 0.5 seen): right on several hosts, where the
    runtime names it in a warning (it cannot tell a sum from a maximum)."""
    import tensorflow as tf
    keras = _keras()

    class Positives(keras.metrics.Metric):
        def __init__(self, name="positives", **kwargs):
            super().__init__(name=name, **kwargs)
            self.count = self.add_weight(name="count", shape=(), initializer="zeros")

        def update_state(self, y_true, y_pred, sample_weight=None):
            self.count.assign_add(tf.reduce_sum(tf.cast(y_pred >= 0.5, tf.float32)))

        def result(self):
            return self.count * 1.0

    model = seed_mlp()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy", Positives()])
    return model


def seed_dict_metric():
    """The seed model with a metric whose result is a dict: its keys are
    the logs' names, as fit flattens them (the export named the metric
    instead, and every job failed)."""
    keras = _keras()

    class Both(keras.metrics.Metric):
        def __init__(self, name="both", **kwargs):
            super().__init__(name=name, **kwargs)
            self.total = self.add_weight(name="total", shape=(), initializer="zeros")
            self.count = self.add_weight(name="count", shape=(), initializer="zeros")

        def update_state(self, y_true, y_pred, sample_weight=None):
            y_true = keras.ops.reshape(y_true, keras.ops.shape(y_pred))  # labels (N,) as fit gives them
            self.total.assign_add(keras.ops.sum(keras.ops.abs(y_true - y_pred)))
            self.count.assign_add(keras.ops.cast(keras.ops.size(y_true), "float32"))

        def result(self):
            return {"mean_abs": self.total / self.count, "total_abs": self.total + 0.0}

    model = seed_mlp()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy", Both()])
    return model


FAMILIES = {
    "seed": (seed_mlp, seed_data),
    "seed_dict_metric": (seed_dict_metric, seed_data),
    "seed_own_metric": (seed_own_metric, seed_data),
    "seed_wide": (seed_wide, seed_data),
    "seed_weighted": (seed_weighted, seed_data),
    "seed_xla": (seed_xla, seed_data),
    "seed_ema": (seed_ema, seed_data),
    "seed_nadam": (seed_nadam, seed_data),
    "seed_schedule": (seed_schedule, seed_data),
    "old_style_branch": (old_style_branch, seed_data),
    "cnn_xla": (cnn_xla, small_cnn_data),
    "wide": (wide, wide_data),
    "multiclass": (multiclass, multiclass_data),
    "two_inputs": (two_inputs, two_inputs_data),
    "cnn": (small_cnn, small_cnn_data),
    "two_heads": (two_heads, two_heads_data),
    "two_heads_weighted": (lambda: two_heads(weighted=True), two_heads_data),
    "untrained_head": (untrained_head, untrained_head_data),
    "dropout": (dropout_mlp, seed_data),
    "embedding": (embedding, embedding_data),
    "embedding_clipnorm": (embedding_clipnorm, embedding_data),
    "embedding_same_names": (embedding_same_names, embedding_same_names_data),
    "seed_loss_scale_factor": (seed_loss_scale_factor, seed_data),
    "lstm": (lstm, sequence_data),
    "gru": (gru, sequence_data),
    "rnn_dropout": (rnn_dropout, sequence_data),
    "normalized": (normalized, seed_data),
    "normalized_big_constant": (normalized_big_constant, seed_data),
    "dropout_masks": (dropout_masks, dropout_masks_data),
    "mixed_bfloat16": (mixed_bfloat16, seed_data),
    "mixed_float16": (mixed_float16, seed_data),
    "mixed_float16_overflow": (mixed_float16_overflow, seed_data),
    "per_pixel": (per_pixel, per_pixel_data),
    "per_timestep": (per_timestep, per_timestep_data),
    "dict_io": (dict_io, dict_io_data),
    "add_loss_only": (add_loss_only, add_loss_only_data),
    "own_loss_inputs_alone": (own_loss_inputs_alone, own_loss_inputs_alone_data),
    "own_loss_no_test_step": (own_loss_no_test_step, own_loss_no_test_step_data),
    "own_loss_no_test_step_weighted": (own_loss_no_test_step_weighted, own_loss_no_test_step_data),
    "custom_step": (custom_step, seed_data),
    "custom_step_partial": (custom_step_partial, seed_data),
    "custom_step_state": (custom_step_state, seed_data),
    "custom_step_table": (custom_step_table, seed_data),
    "custom_trackers": (custom_trackers, seed_data),
    "custom_logs": (custom_logs, seed_data),
    "custom_step_keras2": (custom_step_keras2, seed_data),
    "custom_step_two_optimizers": (custom_step_two_optimizers, seed_data),
    "batch_norm": (batch_norm, batch_norm_data),
    "mobilenet_v2": (mobilenet_v2, mobilenet_v2_data),
    "batch_norm_synchronized": (batch_norm_synchronized, batch_norm_data),
    "string_lookup": (string_lookup, string_lookup_data),
    "text_vectorization": (text_vectorization, text_vectorization_data),
    "categorical": (categorical, categorical_data),
}


def _fit_inputs(model, inputs):
    # Keras takes text as string tensors, not numpy's 'S' or 'U' arrays.
    inputs = {k: _text_tensor(v) if v.dtype.kind in "SU" else v for k, v in inputs.items()}
    if isinstance(getattr(model, "_inputs_struct", None), dict):
        return inputs
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    return [inputs[t._keras_history[0].name] for t in model.inputs]


def _text_tensor(a):
    import tensorflow as tf

    return tf.constant(a)


def _fit_targets(model, targets):
    if not targets:  # a model compiled without a loss: fit(x)
        return None
    if isinstance(getattr(model, "_outputs_struct", None), dict):
        return targets
    return next(iter(targets.values())) if len(targets) == 1 else list(targets.values())


def _callbacks(spec, out):
    """Keras callbacks from [[class, kwargs], ...]; files they write go under
    out/keras (CSVLogger's filename and TensorBoard's log_dir are joined to
    it)."""
    keras = _keras()
    made = []
    for name, kwargs in spec or []:
        kwargs = dict(kwargs)
        for key in ("filename", "log_dir", "filepath"):
            if key in kwargs:
                kwargs[key] = os.path.join(out, "keras", kwargs[key])
        made.append(getattr(keras.callbacks, name)(**kwargs))
    return made


def make(family, out, epochs=3, batch_size=32, rows=1000, validation=True,
         seed=1, fit=True, fit_args=None, callbacks=None, sample_weight=False,
         class_weight=None, learning_rate=None):
    """Write the fixture for ``family`` under ``out`` and return the reference."""
    import sagefit
    from sagefit.export import _var_name  # names as the contract writes them

    keras = _keras()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    build, data = FAMILIES[family]
    model = build()
    inputs, targets = data(rows, rng)
    os.makedirs(out, exist_ok=True)
    cbs = _callbacks(callbacks, out)
    meta = sagefit.export(model, os.path.join(out, "model"), overwrite=True, callbacks=cbs)

    val_rows = max(rows // 4, 1)
    vrng = np.random.default_rng(seed + 1)
    vin, vtg = data(val_rows, vrng)
    weights = {}
    if sample_weight:  # one weight per row (per element for a loss per element), in sample_weight.npy
        # "per-row": one weight per row whatever the loss, as fit broadcasts it
        per_row = () if sample_weight == "per-row" else tuple(meta["sample_weights"][0]["shape"][1:])
        weights = {"train": np.random.default_rng(seed + 2).uniform(0.1, 3.0, (rows,) + per_row).astype(np.float32),
                   "validation": np.random.default_rng(seed + 3).uniform(0.1, 3.0, (val_rows,) + per_row).astype(np.float32)}
    if sample_weight == "per-output":  # sample_weight_<output>.npy, one per output
        weights = {ch: [np.random.default_rng(seed + 4 + 2 * i + k).uniform(0.1, 3.0, n).astype(np.float32)
                        for i in range(len(targets))]
                   for k, (ch, n) in enumerate({"train": rows, "validation": val_rows}.items())}
    for channel, (xs, ys) in {"train": (inputs, targets), "validation": (vin, vtg)}.items():
        if channel == "validation" and not validation:
            continue
        d = os.path.join(out, channel)
        os.makedirs(d, exist_ok=True)
        for name, arr in {**xs, **ys}.items():
            np.save(os.path.join(d, name + ".npy"), arr)
        if channel in weights and sample_weight == "per-output":
            for name, w in zip(targets, weights[channel]):
                np.save(os.path.join(d, f"sample_weight_{name}.npy"), w)
        elif channel in weights:
            np.save(os.path.join(d, "sample_weight.npy"), weights[channel])

    ref = {"family": family, "epochs": epochs, "batch_size": batch_size,
           "rows": rows, "metadata_fingerprint": meta["fingerprint"]}
    if fit:
        if learning_rate is not None:  # as the learning_rate hyperparameter sets it after the export
            model.optimizer.learning_rate = learning_rate
        fit_args = dict(fit_args or {})
        use_val = validation and "validation_split" not in fit_args
        dict_out = isinstance(getattr(model, "_outputs_struct", None), dict)
        if sample_weight:  # per output: in the targets' structure
            fit_args["sample_weight"] = (dict(zip(targets, weights["train"])) if dict_out and sample_weight == "per-output"
                                         else weights["train"])
        if class_weight:
            fit_args["class_weight"] = {int(k): v for k, v in class_weight.items()}
        val_data = (_fit_inputs(model, vin), _fit_targets(model, vtg))
        if sample_weight:
            val_data += (dict(zip(vtg, weights["validation"])) if dict_out and sample_weight == "per-output"
                         else weights["validation"],)
        hist = model.fit(
            _fit_inputs(model, inputs),
            _fit_targets(model, targets),
            epochs=epochs,
            batch_size=batch_size,
            shuffle=False,
            verbose=0,
            validation_data=val_data if use_val else None,
            callbacks=cbs,
            **fit_args,
        )
        ref["history"] = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
        ref["weights"] = [w.astype(np.float64).ravel().tolist() for w in model.get_weights()]
        ref["weight_names"] = [_var_name(v) for v in model.weights]
        # The model's variables that get_weights leaves out (a random
        # layer's seed state): fit's callbacks leave them as training did.
        others = [v for v in model.variables if not any(v is w for w in model.weights)]
        ref["other_variables"] = [np.asarray(v).astype(np.float64).ravel().tolist() for v in others]
        ref["other_variable_names"] = [_var_name(v) for v in others]
        opt_vars = model.optimizer.variables
        opt_vars = opt_vars() if callable(opt_vars) else opt_vars
        ref["optimizer_weights"] = [np.asarray(v).astype(np.float64).ravel().tolist() for v in opt_vars]
        ref["optimizer_weight_names"] = [_var_name(v) for v in opt_vars]
        probe = {k: v[:16] for k, v in inputs.items()}
        pred = model.predict(_fit_inputs(model, probe), verbose=0)
        if isinstance(pred, dict):  # the first output's, as the Go test reads it
            pred = pred[next(iter(targets))]
        elif isinstance(pred, (list, tuple)):
            pred = pred[0]
        ref["predictions"] = np.asarray(pred, dtype=np.float64).ravel().tolist()
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f)
    return ref


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("family", choices=sorted(FAMILIES))
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--no-validation", action="store_true")
    p.add_argument("--no-fit", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fit-args", default="{}",
                   help="JSON object of further model.fit arguments (steps_per_epoch, ...)")
    p.add_argument("--sample-weight", nargs="?", const=True, default=False, choices=[True, "per-output", "per-row"],
                   help="write sample_weight.npy into the channels and fit with them; "
                        "'per-output': sample_weight_<output>.npy for each output; "
                        "'per-row': one weight per row, for a loss per element too")
    p.add_argument("--class-weight", default="{}", help='JSON class_weight for fit, e.g. {"0": 1, "1": 5}')
    p.add_argument("--learning-rate", type=float, default=None,
                   help="fit at this learning rate (the model is exported at its own)")
    p.add_argument("--callbacks", default="[]",
                   help='JSON list of [class, kwargs] Keras callbacks, e.g. [["EarlyStopping", {"patience": 2}]]')
    p.add_argument("--large-step", action="store_true",
                   help="export the step as for a large model (LARGE_STEP_OPS), whatever the "
                        "model's size: Keras's step built from its traced gradients and update, "
                        "train_steps' loop calling it")
    a = p.parse_args()
    if a.large_step:
        sys.modules["sagefit.export"].LARGE_STEP_OPS = 0
    make(a.family, a.out, a.epochs, a.batch_size, a.rows, not a.no_validation,
         a.seed, not a.no_fit, json.loads(a.fit_args), json.loads(a.callbacks),
         a.sample_weight, json.loads(a.class_weight), a.learning_rate)


if __name__ == "__main__":
    main()
