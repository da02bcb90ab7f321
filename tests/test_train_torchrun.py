"""A 2-process data-parallel training run on CPU (torchrun, gloo): the loss goes down and the
checkpoint reloads into a fresh model."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    pytest.importorskip("mdqe.data.synthetic")
    root = tmp_path_factory.mktemp("syn")
    from mdqe.data.synthetic import generate_split
    generate_split(str(root), num_videos=2, num_frames=6, height=64, width=96, seed=3, split="train")
    return str(root)


# 14 s on the idle 2-core machine, about 45 s while other jobs load it
def test_torchrun_two_process_training(tiny_dataset, tmp_path):
    if shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")):
        pytest.skip("torchrun not installed")
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mdqe.train", "--config", "tiny", "--data", tiny_dataset, "--output", str(out),
           "--iters", "8", "--batch", "1", "--lr", "1e-3", "--backbone-lr-mult", "1", "--clip-grad", "1.0",
           "--short-side", "64", "--max-long-side", "96", "--log-every", "1", "--ckpt-every", "4",
           "--threads", "1", "--seed", "0", "--no-progress",
           # validation runs on rank 0 only: it must not enter collective calls
           "--val-data", tiny_dataset, "--val-split", "train", "--val-every", "4", "--val-clips", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    args = json.load(open(out / "train_args.json"))
    assert args["world_size"] == 2
    records = [json.loads(line) for line in open(out / "log.jsonl")]
    log = [r for r in records if "loss" in r]
    assert [r["iter"] for r in records if "val_loss" in r] == [4, 8]
    assert [r["iter"] for r in log] == list(range(1, 9))
    losses = [r["loss"] for r in log]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    # the weights reload into a fresh model, and they are the trained ones (not the initial)
    from mdqe import build_model
    from mdqe.checkpoint import load_checkpoint
    state, cfg, extra = load_checkpoint(str(out / "model_final.safetensors"))
    assert cfg.name == "tiny" and extra.get("iteration") == 8
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    st = torch.load(out / "state_0000004.pt", map_location="cpu", weights_only=True)
    assert st["iteration"] == 4
