"""A cohort's workers load the model the job checked, or nothing: a model file edited after
the check (between submitting the job and a worker reading it) is refused before any code it
names runs, even with --trust."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import UNet

from napari_xaimed import XaimedError
from napari_xaimed.cohort import jobs
from napari_xaimed.cohort.jobs import AttributionJob, cached_model

ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
        "strides": [2], "num_res_units": 0}


def test_a_worker_refuses_a_model_file_changed_since_the_job_was_checked(tmp_path):
    weights = tmp_path / "unet.pt"
    torch.save(UNet(**ARGS).state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps(
        {"network": "monai.networks.nets.unet:UNet", "args": ARGS}))
    job = AttributionJob(model=str(weights), methods=["saliency"], trust=True)
    job.check()  # where the job is made: reads the files and records their hashes
    digest = f"{job.model_sha256}+{job.model_config_sha256}"
    assert cached_model(str(weights), digest, trust=True).trusted

    marker = tmp_path / "ran"
    weights.with_suffix(".json").write_text(json.dumps(
        {"network": "subprocess:run", "args": {"args": ["touch", str(marker)]}}))
    assert cached_model(str(weights), digest, trust=True).trusted  # this worker's copy
    jobs._MODELS.clear()  # another worker process, loading the file for the first time
    with pytest.raises(XaimedError, match="has changed since"):
        cached_model(str(weights), digest, trust=True)
    assert not marker.exists()
