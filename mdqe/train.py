"""Train MDQE: ``python -m mdqe.train --config tiny --data DIR --output OUT``.

Single process, or data-parallel under torchrun
(``torchrun --nproc_per_node 2 -m mdqe.train ...``: gloo on CPU, NCCL on
GPU; every process draws its own shard of the clips). AdamW (backbone
LR x``--backbone-lr-mult``), linear warmup then step decay at ``--steps``,
gradient-norm clipping, periodic checkpoints and ``--resume``.

Writes into ``--output``:
  ``log.jsonl``            one JSON object per logged iteration (losses, lr, time)
  ``model_final.safetensors`` weights + config (mdqe.checkpoint format)
  ``state_<iter>.pt``      resumable state (model, optimizer, scheduler, iteration, RNG)
  ``train_args.json``      the arguments of the run
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from typing import Iterator, List, Optional

import numpy as np
import torch

from runtime.atomic import write_json
from runtime.cli import (add_device_arg, add_output_arg, add_progress_arg, add_seed_arg, add_threads_arg,
                         cli_main, make_parser)
from runtime.errors import UsageError

from .config import get_config
from .engine.batching import targets_to
from .engine.distributed import DistInfo, barrier, cleanup, init_distributed, reduce_mean
from .engine.jsonlog import JsonlLog
from .engine.optim import build_optimizer, build_scheduler
from .engine.train_state import load_train_state, save_model_weights, save_train_state, set_rng_state
from .losses import SetCriterion


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = make_parser("python -m mdqe.train", __doc__, also=("mdqe-train",))
    p.add_argument("--config", default="tiny", help="preset name (mdqe.config.PRESETS) or a config JSON file")
    p.add_argument("--data", required=True, help="dataset root in YouTube-VIS layout (annotations/, JPEGImages/)")
    p.add_argument("--split", default="train", help="annotation file annotations/<split>.json (default train)")
    p.add_argument("--val-data", default=None, help="optional dataset root whose clips give a validation loss")
    p.add_argument("--val-split", default=None, help="split of --val-data (default: the only/first one)")
    add_output_arg(p)
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--batch", type=int, default=2, help="clips per process and iteration")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--backbone-lr-mult", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--steps", default="", help="comma-separated iterations where the LR is multiplied by --gamma")
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=0, help="linear LR warmup iterations")
    p.add_argument("--clip-grad", type=float, default=0.01, help="max gradient L2 norm (<= 0 disables)")
    p.add_argument("--no-repulsion", action="store_true", help="plain BCE + Dice instead of the repulsion loss")
    p.add_argument("--criterion", default="authors", choices=["authors", "paper"],
                   help="authors: the authors' criterion (one-to-many dynamic-k matching, their normalisations; "
                        "default); paper: Hungarian one-to-one, paper-style losses (docs/training.md)")
    p.add_argument("--resume", default=None, help="state_<iter>.pt to continue from")
    p.add_argument("--init", default=None, help="initial weights (safetensors/.pth via mdqe.checkpoint)")
    add_seed_arg(p)
    p.add_argument("--short-side", type=int, default=None, help="training clip shorter side (default: config test size)")
    p.add_argument("--max-long-side", type=int, default=None,
                   help="training clip longer-side limit (default: config)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--val-every", type=int, default=0, help="validation-loss period (0: only at the end)")
    p.add_argument("--val-clips", type=int, default=8)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes per training process")
    add_threads_arg(p, help="torch intra-op threads")
    add_device_arg(p, help="PyTorch device (under torchrun: cuda = each process's LOCAL_RANK GPU)")
    add_progress_arg(p)
    a = p.parse_args(argv)
    try:
        a.steps = [int(s) for s in a.steps.split(",") if s.strip()]
    except ValueError:
        p.error(f"--steps must be comma-separated integers, got {a.steps!r}")
    if a.iters < 1 or a.batch < 1:
        p.error("--iters and --batch must be >= 1")
    return a


def load_config(name: str):
    if os.path.isfile(name):
        with open(name) as f:
            return get_config(json.load(f))
    return get_config(name)


# ---- data ---------------------------------------------------------------------
def build_dataset(root: str, split: Optional[str], cfg, args, train: bool):
    """The project's clip dataset (mdqe.data) over a YouTube-VIS-layout root."""
    from .data.datasets import build_clip_dataset
    return build_clip_dataset(root, cfg, split=split, train=train, short_side=args.short_side,
                              max_size=args.max_long_side)


class ShardedInfiniteSampler:
    """Endless sample indices for one process: epoch e is a permutation seeded by
    (seed, e); process r takes every world-th index starting at r. ``skip``
    drops that many leading indices (resume)."""

    def __init__(self, size: int, rank: int, world: int, seed: int, skip: int = 0):
        if size < 1:
            raise ValueError("the training dataset is empty")
        self.size, self.rank, self.world, self.seed, self.skip = size, rank, world, seed, skip

    def __iter__(self) -> Iterator[int]:
        n, e = 0, 0
        while True:
            g = torch.Generator().manual_seed(self.seed * 100003 + e)
            perm = torch.randperm(self.size, generator=g).tolist()
            for i in perm[self.rank::self.world] or perm[:1]:
                if n >= self.skip:
                    yield i
                n += 1
            e += 1


def make_loader(dataset, info: DistInfo, args, start_iter: int):
    from .data import collate_clips
    sampler = ShardedInfiniteSampler(len(dataset), info.rank, info.world_size, args.seed,
                                     skip=start_iter * args.batch)
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch, sampler=sampler, num_workers=args.workers,
                                       collate_fn=collate_clips, persistent_workers=args.workers > 0)


# ---- loop ---------------------------------------------------------------------
def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def scalars(losses: dict) -> dict:
    return {k: float(v.detach()) for k, v in losses.items()}


@torch.no_grad()
def validation_loss(model, criterion, dataset, n_clips: int, device) -> dict:
    """Mean losses over the first ``n_clips`` clips of ``dataset`` (model in eval mode)."""
    from .data import collate_clips
    was, was_sync, was_gen = model.training, criterion.sync_counts, getattr(criterion, "generator", None)
    model.eval()
    criterion.sync_counts = False  # only this process runs validation: no collective calls
    # init-reid samples at random: a fixed generator keeps validation losses comparable and
    # leaves the training run's random stream untouched
    criterion.generator = torch.Generator().manual_seed(0)
    acc: dict = {}
    n = min(n_clips, len(dataset))
    for i in range(n):
        batch = collate_clips([dataset[i]])
        out = model(batch["images"].to(device), valid_hw=batch["valid_hw"].to(device))
        for k, v in scalars(criterion(out, targets_to(batch["targets"], device))).items():
            acc[k] = acc.get(k, 0.0) + v / n
    model.train(was)
    criterion.sync_counts = was_sync
    criterion.generator = was_gen
    return acc


def _fail(msg: str) -> None:
    """A one-line error on bad input (a refused or unfitting checkpoint, ...): exit status 2."""
    raise UsageError(msg)


@cli_main
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    info = init_distributed(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config)
    except (OSError, ValueError, KeyError, TypeError) as e:
        _fail(f"--config {args.config}: {(str(e).splitlines() or [type(e).__name__])[0]}")
    seed_all(args.seed + 1000 * info.rank)

    from . import build_model
    model = build_model(cfg).to(info.device)
    if args.init:
        from .checkpoint import CheckpointError, load_checkpoint
        try:
            sd, _, _ = load_checkpoint(args.init, cfg)
        except (CheckpointError, FileNotFoundError, ValueError) as e:
            _fail(f"--init {args.init}: {(str(e).splitlines() or [type(e).__name__])[0]}")
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if info.is_main:
            print(f"init from {args.init}: {len(missing)} missing, {len(unexpected)} unexpected keys", flush=True)
    optimizer = build_optimizer(model, args.lr, args.weight_decay, args.backbone_lr_mult)
    scheduler = build_scheduler(optimizer, args.steps, args.gamma, args.warmup)
    start_iter = 0
    if args.resume:
        try:
            state = load_train_state(args.resume)
        except (ValueError, FileNotFoundError) as e:
            _fail(str(e) if str(e).startswith("--resume") else f"--resume: {e}")
        if state["config"] != json.loads(json.dumps(cfg.to_dict())) and state["config"] != cfg.to_dict():
            _fail(f"--resume {args.resume}: its config differs from --config {args.config}")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            _fail(f"--resume {args.resume}: the state does not fit the model/optimizer "
                  f"({(str(e).splitlines() or [type(e).__name__])[0]})")
        start_iter = int(state["iteration"])
        if "rng" in state and info.world_size == 1:
            set_rng_state(state["rng"])
        else:
            seed_all(args.seed + 1000 * info.rank + start_iter)
    if start_iter >= args.iters:
        _fail(f"--resume state is at iteration {start_iter} >= --iters {args.iters}")

    # the data are read before anything is written to --output
    try:
        train_set = build_dataset(args.data, args.split, cfg, args, train=True)
        val_set = build_dataset(args.val_data, args.val_split, cfg, args, train=False) if args.val_data else None
    except (OSError, ValueError, KeyError) as e:
        _fail(f"training data: {(str(e).splitlines() or [type(e).__name__])[0]}")

    os.makedirs(args.output, exist_ok=True)
    log = JsonlLog(os.path.join(args.output, "log.jsonl"))
    if info.is_main:
        if args.resume:
            log.truncate_after(start_iter)
        write_json(os.path.join(args.output, "train_args.json"),
                   {**vars(args), "world_size": info.world_size, "argv": sys.argv}, indent=1)

    loader = iter(make_loader(train_set, info, args, start_iter))
    # init-reid's random sampling draws from its own generator, re-seeded from (seed, rank, iteration)
    # every iteration: runs are reproducible and --resume stays exact whatever else uses torch's RNG
    reid_gen = torch.Generator()
    criterion = SetCriterion(cfg, repulsion=not args.no_repulsion, style=args.criterion, generator=reid_gen)
    net = model
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    net.train()

    bar = None
    if info.is_main and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=args.iters, initial=start_iter, desc="train", dynamic_ncols=True)
    t0 = time.time()
    t_last, it_last = t0, start_iter
    for it in range(start_iter, args.iters):
        reid_gen.manual_seed(args.seed * 1000003 + info.rank * 7919 + it)
        batch = next(loader)
        images = batch["images"].to(info.device, non_blocking=True)
        targets = targets_to(batch["targets"], info.device)
        outputs = net(images, valid_hw=batch["valid_hw"].to(info.device, non_blocking=True))
        losses = criterion(outputs, targets)
        total = losses["loss"]
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite loss at iteration {it}: "
                                     f"{ {k: v for k, v in scalars(losses).items() if not math.isfinite(v)} }")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                   args.clip_grad if args.clip_grad > 0 else float("inf"))
        optimizer.step()
        scheduler.step()
        done = it + 1
        if done % args.log_every == 0 or done == args.iters or done == start_iter + 1:
            rec = reduce_mean(scalars(losses), info.device)
            now = time.time()
            if info.is_main:
                rec.update({"iter": done, "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                            "time": round(now - t0, 3), "sec_per_iter": round((now - t_last) / max(1, done - it_last), 4)})
                log.write(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.3f}")
            t_last, it_last = now, done
        if bar is not None:
            bar.update(1)
        val_due = val_set is not None and ((args.val_every and done % args.val_every == 0) or done == args.iters)
        if val_due and info.is_main:
            v = validation_loss(model, criterion, val_set, args.val_clips, info.device)
            log.write({"iter": done, **{f"val_{k}": x for k, x in v.items()}})
        if info.is_main and (done % args.ckpt_every == 0 or done == args.iters):
            save_train_state(os.path.join(args.output, f"state_{done:07d}.pt"), model, optimizer, scheduler, done, cfg)
            extra = {"iteration": done, "repulsion": not args.no_repulsion, "criterion": args.criterion,
                     "seed": args.seed}
            name = "model_final.safetensors" if done == args.iters else f"model_{done:07d}.safetensors"
            save_model_weights(model, os.path.join(args.output, name), cfg, extra=extra)
    if bar is not None:
        bar.close()
    if info.is_main:
        print(f"done: {args.iters - start_iter} iterations in {time.time() - t0:.1f} s; "
              f"weights {os.path.join(args.output, 'model_final.safetensors')}", flush=True)
    barrier()
    cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
