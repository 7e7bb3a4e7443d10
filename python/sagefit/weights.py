"""The weights sagefit trained, back into a Keras model."""

import json
import os

from sagefit import contract


def trained_values(model_dir):
    """name -> value of every model variable of a SavedModel sagefit wrote
    (``/opt/ml/model/1``) or exported, in the model's order, read through
    its ``sagefit_read_variables`` signature."""
    import tensorflow as tf

    model_dir = os.path.expanduser(os.fspath(model_dir))
    path = os.path.join(model_dir, contract.EXTRA_DIR, contract.METADATA_FILE)
    if not os.path.isfile(path):
        versions = sorted(d for d in os.listdir(model_dir) if d.isdigit()) if os.path.isdir(model_dir) else []
        hint = f" (it holds version folders {', '.join(versions)}: give {os.path.join(model_dir, versions[-1])})" if versions else ""
        raise ValueError(
            f"{model_dir} is not a SavedModel sagefit wrote or exported: it has no {contract.EXTRA_DIR}/"
            f"{contract.METADATA_FILE}{hint}; give the job's model/1 folder")
    with open(path) as f:
        meta = json.load(f)
    values = tf.saved_model.load(model_dir).signatures[meta["signatures"]["read_variables"]]()
    return {v["name"]: values[v["key"]].numpy() for v in meta["variables"] if v["kind"] == contract.KIND_MODEL}


def load_weights(model, model_dir):
    """Set ``model``'s variables (its weights and non-trainable state, such
    as BatchNormalization's moving statistics) to those of the model sagefit
    trained in ``model_dir`` (``model/1`` of the job's output), so the
    trained model can be evaluated, saved or exported from Keras:
    ``model.export(path)`` writes a SavedModel of its inference signatures
    alone (``serve``, ``serving_default``), where ``model/1`` also carries
    the training signatures. ``model`` is the model that was exported (built the same
    way: its variables are matched in order, their shapes checked)."""
    if not hasattr(model, "variables") or not hasattr(model, "get_layer"):
        raise ValueError(f"load_weights(model, model_dir) takes the Keras model first, not {type(model).__name__}")
    values = list(trained_values(model_dir).items())
    variables = list(model.variables)
    if not variables:
        raise ValueError("this model has no variables yet: build it first (give it a keras.Input, or call it on a batch)")
    if len(values) != len(variables):
        raise ValueError(
            f"{model_dir} holds {len(values)} model variables and this model has {len(variables)}: "
            "load them into the model that was exported (built the same way)")
    for v, (name, value) in zip(variables, values):
        if tuple(v.shape) != value.shape:
            raise ValueError(
                f"{model_dir}'s variable {name} has shape {value.shape}, this model's "
                f"{getattr(v, 'path', v.name)} {tuple(v.shape)}: load them into the model that was exported")
    for v, (_, value) in zip(variables, values):
        v.assign(value)
