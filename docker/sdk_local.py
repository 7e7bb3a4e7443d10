"""Trains a sagefit image with the SageMaker Python SDK's local mode, as a user would.

    python docker/sdk_local.py --image sagefit:cpu --hosts 2 --model DIR --training DIR \
        [--validation DIR] --output DIR [--hp epochs=2 ...]

Run with the SDK's own virtualenv (docker/sdk-requirements.txt) by
docker/images_test.go, which points every AWS endpoint at a moto server on
loopback and switches the SDK's telemetry off through the config file named
by SAGEMAKER_USER_CONFIG_OVERRIDE, so that nothing leaves the machine. The
estimator is the README's: Estimator(image_uri=..., instance_type="local"),
fit() with file:// channels "training" (and "validation") and "model". The
last line printed is a JSON object: the job's name and the model and output
archives.
"""

import argparse
import json
import os
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--image", required=True)
    p.add_argument("--hosts", type=int, default=1)
    p.add_argument("--model", required=True)
    p.add_argument("--training", required=True)
    p.add_argument("--validation")
    p.add_argument("--output", required=True)
    p.add_argument("--hp", action="append", default=[], help="KEY=VALUE")
    a = p.parse_args()

    if "SAGEMAKER_USER_CONFIG_OVERRIDE" not in os.environ:
        sys.exit("sdk_local.py: SAGEMAKER_USER_CONFIG_OVERRIDE is not set: the SDK would send telemetry")

    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.local import LocalSession

    session = LocalSession()
    session.config = {"local": {"local_code": True}}
    hps = dict(kv.split("=", 1) for kv in a.hp)
    est = Estimator(
        image_uri=a.image,
        role="arn:aws:iam::111111111111:role/dummy",
        instance_count=a.hosts,
        instance_type="local",
        output_path="file://" + os.path.abspath(a.output),
        hyperparameters=hps,
        sagemaker_session=session,
    )
    inputs = {
        "training": TrainingInput("file://" + os.path.abspath(a.training), distribution="FullyReplicated"),
        "model": TrainingInput("file://" + os.path.abspath(a.model)),
    }
    if a.validation:
        inputs["validation"] = TrainingInput("file://" + os.path.abspath(a.validation))
    est.fit(inputs, wait=True, logs=True)
    job = est.latest_training_job.name
    model = est.model_data
    out = os.path.join(os.path.abspath(a.output), job, "output", "output.tar.gz")
    if not os.path.exists(out):
        out = os.path.join(os.path.dirname(model.replace("file://", "")), "output.tar.gz")
    print(json.dumps({"job": job, "model_data": model.replace("file://", ""), "output_data": out}))


if __name__ == "__main__":
    main()
