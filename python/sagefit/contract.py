"""Names of the training contract shared with the Go runtime (model/contract.go).

Change both sides together and bump VERSION when a role changes.
Version 2: weights of a loss per element have its shape per row, and a
model compiled without a loss has no targets (a version 1 runtime would
fail at the first step).
"""

FORMAT = "sagefit-training-savedmodel"
VERSION = 2
EXTRA_DIR = "assets.extra"
METADATA_FILE = "sagefit.json"

# Signatures (roles).
SERVING = "serving_default"
TRAIN_STEP = "sagefit_train_step"
COMPUTE_GRADIENTS = "sagefit_compute_gradients"
APPLY_GRADIENTS = "sagefit_apply_gradients"
TEST_STEP = "sagefit_test_step"
RESET_METRICS = "sagefit_reset_metrics"
METRIC_RESULTS = "sagefit_metric_results"
METRIC_STATE = "sagefit_metric_state"
ASSIGN_METRIC_STATE = "sagefit_assign_metric_state"
READ_VARIABLES = "sagefit_read_variables"
ASSIGN_VARIABLES = "sagefit_assign_variables"
GET_LEARNING_RATE = "sagefit_get_learning_rate"
SET_LEARNING_RATE = "sagefit_set_learning_rate"
# The share of the global batch's loss this process's backward pass runs on
# (1/processes), for an optimizer that scales the loss (mixed_float16's
# LossScaleOptimizer); only for such an optimizer.
SET_LOSS_SHARE = "sagefit_set_loss_share"
# Several processes with sparse gradients (an Embedding's rows): the
# gradient with the sparse ones as the rows looked up (indices, values and
# their count per variable), and their update with the rows every process
# looked up; only for a model with sparse gradients (metadata
# sparse_gradients), its steps' feeds as train_steps takes them.
COMPUTE_SPARSE_GRADIENTS = "sagefit_compute_sparse_gradients"
APPLY_SPARSE_GRADIENTS = "sagefit_apply_sparse_gradients"
# The step signatures again with a per-row sample weight after the targets
# (fit's sample_weight, or class_weight turned into one).
TRAIN_STEP_WEIGHTED = "sagefit_train_step_weighted"
COMPUTE_GRADIENTS_WEIGHTED = "sagefit_compute_gradients_weighted"
TEST_STEP_WEIGHTED = "sagefit_test_step_weighted"
# Several train steps in one call: the step tensors stacked, [steps, rows, ...]
# (with the weights when the steps take them).
TRAIN_STEPS = "sagefit_train_steps"
# apply_gradients then compute_gradients (its weighted form when the steps
# take weights) in one call.
APPLY_COMPUTE_GRADIENTS = "sagefit_apply_compute_gradients"
# The optimizer's last word on the weights once fit's epochs end
# (finalize_variable_values: use_ema copies the moving averages into them);
# only for an optimizer that has one.
FINALIZE_VARIABLES = "sagefit_finalize_variables"

# Tensor keys inside signatures.
GRADIENTS = "gradients"
ITERATIONS = "iterations"
STATE = "state"
OK = "ok"
LEARNING_RATE = "learning_rate"
LOSS_SHARE = "loss_share"
SPARSE_INDICES = "sparse_indices"
SPARSE_VALUES = "sparse_values"
SPARSE_COUNTS = "sparse_counts"
SAMPLE_WEIGHT = "sample_weight"

# A variable's "aggregation" in the metadata: hosts average it before it is
# read (validation, checkpoints, the saved model).
MEAN = "mean"

# A variable's "kind" in the metadata: whose state it is.
KIND_MODEL = "model"  # the model's own (Keras's model.variables)
KIND_OPTIMIZER = "optimizer"  # the optimizer's
KIND_STEP = "step"  # one a custom step uses that Keras does not track


def signature_names(learning_rate_assignable, sample_weighted=True, train_steps=True, finalizes=False,
                    test_step=True, loss_share=False, sparse=False):
    """The roles and their signatures. A model whose steps take sample
    weights has them in the weighted form only (the runtime feeds ones to a
    batch without); a model whose test step cannot be traced has none
    (metadata test_step_refused says why)."""
    roles = {
        "serving": SERVING,
        "apply_gradients": APPLY_GRADIENTS,
        "reset_metrics": RESET_METRICS,
        "metric_results": METRIC_RESULTS,
        "metric_state": METRIC_STATE,
        "assign_metric_state": ASSIGN_METRIC_STATE,
        "read_variables": READ_VARIABLES,
        "assign_variables": ASSIGN_VARIABLES,
        "get_learning_rate": GET_LEARNING_RATE,
    }
    if learning_rate_assignable:
        roles["set_learning_rate"] = SET_LEARNING_RATE
    if sample_weighted:
        roles["train_step_weighted"] = TRAIN_STEP_WEIGHTED
        roles["compute_gradients_weighted"] = COMPUTE_GRADIENTS_WEIGHTED
        if test_step:
            roles["test_step_weighted"] = TEST_STEP_WEIGHTED
    else:
        roles["train_step"] = TRAIN_STEP
        roles["compute_gradients"] = COMPUTE_GRADIENTS
        if test_step:
            roles["test_step"] = TEST_STEP
    if train_steps:
        roles["train_steps"] = TRAIN_STEPS
    roles["apply_compute_gradients"] = APPLY_COMPUTE_GRADIENTS
    if finalizes:
        roles["finalize_variables"] = FINALIZE_VARIABLES
    if loss_share:
        roles["set_loss_share"] = SET_LOSS_SHARE
    if sparse:
        roles["compute_sparse_gradients"] = COMPUTE_SPARSE_GRADIENTS
        roles["apply_sparse_gradients"] = APPLY_SPARSE_GRADIENTS
    return roles
