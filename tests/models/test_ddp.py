"""Multi-process training: a 2-process CPU (gloo) DDP run through torchrun and fastai's DistributedTrainer."""
import os
import re
import subprocess
import sys

import pytest
import torch

from geomax.errors import ArgumentError
from geomax.models import distributed as ddp
from geomax.models.package import read_model_package

pytest.importorskip("accelerate")


@pytest.fixture
def chips(synthetic_export):
    """The shared export (tests/conftest.py): 64 px chips."""
    return synthetic_export.out_folder


def test_two_process_gloo_run_keeps_weights_identical_and_saves_one_model(chips, tmp_path):
    out = tmp_path / "model"
    export_files = sorted(chips.rglob("*"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "geomax.train_ddp", str(chips), str(out), "--backbone", "max_deeplab_tiny", "--epochs", "1",
           "--lr", "1e-3", "--batch-size", "2", "--val-split", "0.25", "--no-checkpoint", "--no-metrics"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    found = re.findall(r"rank (\d) weights sha256 ([0-9a-f]{64}) after (\d+) training steps", log)
    digests = {r: d for r, d, _ in found}
    steps = {r: int(n) for r, _, n in found}
    assert sorted(digests) == ["0", "1"], log[-4000:]
    # DDP averaged the gradients: both processes (which saw different chips) end with the same weights
    assert digests["0"] == digests["1"]
    assert "weights on 2 process(es): identical" in log
    # ... and each process trained on its half of the epoch (fastai's DistributedDL split the batches)
    from geomax import prepare_data

    single = prepare_data(chips, batch_size=2, val_split_pct=0.25, seed=42)
    assert len(single.train) >= 2
    assert steps == {"0": -(-len(single.train) // 2), "1": -(-len(single.train) // 2)}
    # exactly one model, written once (by rank 0), holding those weights
    assert log.count("model saved to") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(chips.rglob("*")) == export_files  # nothing written into the training data
    assert sorted(p.suffix for p in out.iterdir() if p.name != ".geomax-output.json") == [".dlpk", ".emd", ".html", ".pth"]
    emd, state_dict = read_model_package(out)
    assert emd["ModelParameters"]["backbone"] == "max_deeplab_tiny"
    assert ddp.parameter_digest(state_dict) == digests["0"]


def test_single_process_defaults(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert (ddp.rank(), ddp.world_size(), ddp.local_rank(), ddp.is_main_process()) == (0, 1, 0, True)
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert ddp.digests_of_all_processes(net) == [ddp.parameter_digest(net)]
    before = ddp.parameter_digest(net)
    with torch.no_grad():
        net[0].weight[0, 0] += 1e-6
    assert ddp.parameter_digest(net) != before


def test_bad_settings_raise_before_training(monkeypatch):
    class NoFit:  # fails loudly if training were started
        def fit(self, *a, **k):
            raise AssertionError("fit must not run")

    with pytest.raises(ArgumentError, match="lr must be"):
        ddp.fit_distributed(NoFit(), epochs=1, lr=-1.0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ArgumentError, match="lr_find is not run under DDP"):
        ddp.fit_distributed(NoFit(), epochs=1, lr_find=True)
    with pytest.raises(ArgumentError, match="early_stopping"):
        ddp.fit_distributed(NoFit(), epochs=1, early_stopping=True)
    if not torch.cuda.is_available():
        with pytest.raises(ArgumentError, match="SyncBatchNorm does not run on CPU"):
            ddp.fit_distributed(NoFit(), epochs=1, sync_bn=True)
