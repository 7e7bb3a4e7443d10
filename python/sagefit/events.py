"""Read TensorBoard event files with TensorBoard's own reader.

``python -m sagefit.events DIR`` prints, as JSON, every scalar under
DIR/train and DIR/validation: {"train/epoch_loss": [[step, value], ...]}.
The tests compare sagefit's event files with Keras's this way.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def scalars(logdir):
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    out = {}
    for run in ("train", "validation"):
        path = os.path.join(logdir, run)
        if not os.path.isdir(path):
            continue
        acc = ea.EventAccumulator(path, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            out[f"{run}/{tag}"] = [[e.step, e.value] for e in acc.Scalars(tag)]
        for tag in tags.get("tensors", []):
            if acc.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
                continue  # Keras also writes its model config as a tensor
            out[f"{run}/{tag}"] = [
                [e.step, float(tensor_util.make_ndarray(e.tensor_proto))]
                for e in acc.Tensors(tag)
            ]
    return out


if __name__ == "__main__":
    print(json.dumps(scalars(sys.argv[1]), sort_keys=True))
