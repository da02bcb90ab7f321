"""Training loop pieces: sharded sampling, LR schedule, batching, and exact resume."""
import json
import os

import pytest
import torch

from mdqe.engine.jsonlog import JsonlLog
from mdqe.engine.optim import lr_factor
from mdqe.train import ShardedInfiniteSampler


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_sampler_shards_are_disjoint_and_resume_skips():
    a = _take(iter(ShardedInfiniteSampler(10, 0, 2, seed=3)), 5)
    b = _take(iter(ShardedInfiniteSampler(10, 1, 2, seed=3)), 5)
    assert sorted(a + b) == list(range(10))
    full = _take(iter(ShardedInfiniteSampler(10, 0, 2, seed=3)), 12)
    assert _take(iter(ShardedInfiniteSampler(10, 0, 2, seed=3, skip=7)), 5) == full[7:12]
    assert full[:5] != full[5:10] or len(set(full[:5])) == 5  # a new permutation per epoch


def test_lr_factor_steps_and_warmup():
    assert lr_factor(0, [10, 20]) == 1.0
    assert lr_factor(10, [10, 20]) == pytest.approx(0.1)
    assert lr_factor(25, [10, 20]) == pytest.approx(0.01)
    assert lr_factor(0, [], warmup=10) == pytest.approx(0.001)
    assert lr_factor(5, [], warmup=10) == pytest.approx(0.001 + 0.999 * 0.5)


def test_jsonl_log_truncate(tmp_path):
    log = JsonlLog(str(tmp_path / "log.jsonl"))
    for i in range(1, 6):
        log.write({"iter": i, "loss": 1.0 / i})
    log.truncate_after(3)
    assert [r["iter"] for r in log.read()] == [1, 2, 3]


class _FakeClips(torch.utils.data.Dataset):
    """Tiny deterministic clips: two moving squares of classes 0 and 2 on noise."""

    def __init__(self, n=6, T=4, H=64, W=64):
        self.n, self.T, self.H, self.W = n, T, H, W

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        T, H, W = self.T, self.H, self.W
        img = torch.randn(T, 3, H, W, generator=g) * 0.1
        masks = torch.zeros(2, T, H, W, dtype=torch.bool)
        boxes = torch.zeros(2, T, 4)
        for k in range(2):
            for t in range(T):
                x0, y0 = 4 + 24 * k + 2 * t + i, 8 + 3 * t + 12 * k
                masks[k, t, y0:y0 + 20, x0:x0 + 20] = True
                img[t, k, y0:y0 + 20, x0:x0 + 20] += 1.0
                boxes[k, t] = torch.tensor([(x0 + 10) / W, (y0 + 10) / H, 20 / W, 20 / H])
        return {"images": img, "targets": {"labels": torch.tensor([0, 2]), "ids": torch.tensor([1, 2]),
                                           "boxes": boxes, "masks": masks,
                                           "valid": torch.ones(2, T, dtype=torch.bool)}}


def test_resume_reproduces_uninterrupted_training(tmp_path, monkeypatch):
    pytest.importorskip("mdqe.model")
    from safetensors.torch import load_file

    import mdqe.train as tr
    monkeypatch.setattr(tr, "build_dataset", lambda *a, **k: _FakeClips())
    common = ["--config", "tiny", "--data", "unused", "--batch", "1", "--lr", "1e-3", "--log-every", "1",
              "--ckpt-every", "2", "--no-progress", "--threads", "1", "--seed", "5"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert tr.main(common + ["--output", a, "--iters", "4"]) == 0
    assert tr.main(common + ["--output", b, "--iters", "2"]) == 0
    assert tr.main(common + ["--output", b, "--iters", "4", "--resume", os.path.join(b, "state_0000002.pt")]) == 0
    wa = load_file(os.path.join(a, "model_final.safetensors"))
    wb = load_file(os.path.join(b, "model_final.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    la = [json.loads(x) for x in open(os.path.join(a, "log.jsonl"))]
    lb = [json.loads(x) for x in open(os.path.join(b, "log.jsonl"))]
    assert [r["iter"] for r in lb] == [1, 2, 3, 4]
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-5)
