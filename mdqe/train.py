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
from dataclasses import dataclass
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


@dataclass
class Training:
    """The state of one training run, filled stage by stage (see ``main``)."""
    args: argparse.Namespace
    info: DistInfo
    cfg: object
    model: torch.nn.Module = None
    optimizer: object = None
    scheduler: object = None
    start_iter: int = 0
    train_set: object = None
    val_set: object = None
    log: Optional[JsonlLog] = None
    loader: Optional[Iterator] = None
    reid_gen: Optional[torch.Generator] = None
    criterion: Optional[SetCriterion] = None
    net: Optional[torch.nn.Module] = None     # the model, or its DistributedDataParallel wrapper
    bar: object = None
    t0: float = 0.0
    t_last: float = 0.0
    it_last: int = 0


def setup(args: argparse.Namespace) -> Training:
    """Process group (torchrun) or single process, threads, the config, and the seed of this rank."""
    info = init_distributed(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config)
    except (OSError, ValueError, KeyError, TypeError) as e:
        _fail(f"--config {args.config}: {(str(e).splitlines() or [type(e).__name__])[0]}")
    seed_all(args.seed + 1000 * info.rank)
    return Training(args=args, info=info, cfg=cfg)


def build_model_and_optimizer(tr: Training) -> None:
    """The model on the device (weights from --init if given), AdamW and the LR schedule."""
    from . import build_model
    args, info = tr.args, tr.info
    tr.model = build_model(tr.cfg).to(info.device)
    if args.init:
        from .checkpoint import CheckpointError, load_checkpoint
        try:
            sd, _, _ = load_checkpoint(args.init, tr.cfg)
        except (CheckpointError, FileNotFoundError, ValueError) as e:
            _fail(f"--init {args.init}: {(str(e).splitlines() or [type(e).__name__])[0]}")
        missing, unexpected = tr.model.load_state_dict(sd, strict=False)
        if info.is_main:
            print(f"init from {args.init}: {len(missing)} missing, {len(unexpected)} unexpected keys", flush=True)
    tr.optimizer = build_optimizer(tr.model, args.lr, args.weight_decay, args.backbone_lr_mult)
    tr.scheduler = build_scheduler(tr.optimizer, args.steps, args.gamma, args.warmup)


def resume(tr: Training) -> None:
    """--resume: model, optimizer, scheduler, iteration and RNG state from a state_<iter>.pt (its config
    must be --config's); sets tr.start_iter, which must be below --iters."""
    args, info, cfg = tr.args, tr.info, tr.cfg
    if args.resume:
        try:
            state = load_train_state(args.resume)
        except (ValueError, FileNotFoundError) as e:
            _fail(str(e) if str(e).startswith("--resume") else f"--resume: {e}")
        if state["config"] != json.loads(json.dumps(cfg.to_dict())) and state["config"] != cfg.to_dict():
            _fail(f"--resume {args.resume}: its config differs from --config {args.config}")
        try:
            tr.model.load_state_dict(state["model"])
            tr.optimizer.load_state_dict(state["optimizer"])
            tr.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            _fail(f"--resume {args.resume}: the state does not fit the model/optimizer "
                  f"({(str(e).splitlines() or [type(e).__name__])[0]})")
        tr.start_iter = int(state["iteration"])
        if "rng" in state and info.world_size == 1:
            set_rng_state(state["rng"])
        else:
            seed_all(args.seed + 1000 * info.rank + tr.start_iter)
    if tr.start_iter >= args.iters:
        _fail(f"--resume state is at iteration {tr.start_iter} >= --iters {args.iters}")


def build_data(tr: Training) -> None:
    """The training (and validation) clip datasets; read before anything is written to --output."""
    args = tr.args
    try:
        tr.train_set = build_dataset(args.data, args.split, tr.cfg, args, train=True)
        tr.val_set = build_dataset(args.val_data, args.val_split, tr.cfg, args, train=False) if args.val_data else None
    except (OSError, ValueError, KeyError) as e:
        _fail(f"training data: {(str(e).splitlines() or [type(e).__name__])[0]}")


def open_output(tr: Training) -> None:
    """--output: log.jsonl (cut back to the resumed iteration) and train_args.json (main process)."""
    args, info = tr.args, tr.info
    os.makedirs(args.output, exist_ok=True)
    tr.log = JsonlLog(os.path.join(args.output, "log.jsonl"))
    if info.is_main:
        if args.resume:
            tr.log.truncate_after(tr.start_iter)
        write_json(os.path.join(args.output, "train_args.json"),
                   {**vars(args), "world_size": info.world_size, "argv": sys.argv}, indent=1)


def prepare_loop(tr: Training) -> None:
    """The sharded infinite loader from start_iter, the criterion, DDP, the progress bar and clocks."""
    args, info = tr.args, tr.info
    tr.loader = iter(make_loader(tr.train_set, info, args, tr.start_iter))
    # init-reid's random sampling draws from its own generator, re-seeded from (seed, rank, iteration)
    # every iteration: runs are reproducible and --resume stays exact whatever else uses torch's RNG
    tr.reid_gen = torch.Generator()
    tr.criterion = SetCriterion(tr.cfg, repulsion=not args.no_repulsion, style=args.criterion, generator=tr.reid_gen)
    tr.net = tr.model
    if info.distributed:
        tr.net = torch.nn.parallel.DistributedDataParallel(
            tr.model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    tr.net.train()
    if info.is_main and not args.no_progress:
        from tqdm import tqdm
        tr.bar = tqdm(total=args.iters, initial=tr.start_iter, desc="train", dynamic_ncols=True)
    tr.t0 = time.time()
    tr.t_last, tr.it_last = tr.t0, tr.start_iter


def train_step(tr: Training, it: int):
    """One iteration: a batch of clips -> losses -> backward, clipped gradients, optimizer and LR step.
    Returns (losses dict, gradient norm before clipping); FloatingPointError on a non-finite loss."""
    args, info = tr.args, tr.info
    tr.reid_gen.manual_seed(args.seed * 1000003 + info.rank * 7919 + it)
    batch = next(tr.loader)
    images = batch["images"].to(info.device, non_blocking=True)
    targets = targets_to(batch["targets"], info.device)
    outputs = tr.net(images, valid_hw=batch["valid_hw"].to(info.device, non_blocking=True))
    losses = tr.criterion(outputs, targets)
    total = losses["loss"]
    if not torch.isfinite(total):
        raise FloatingPointError(f"non-finite loss at iteration {it}: "
                                 f"{ {k: v for k, v in scalars(losses).items() if not math.isfinite(v)} }")
    tr.optimizer.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(tr.model.parameters(),
                                               args.clip_grad if args.clip_grad > 0 else float("inf"))
    tr.optimizer.step()
    tr.scheduler.step()
    return losses, grad_norm


def log_step(tr: Training, done: int, losses: dict, grad_norm) -> None:
    """Every --log-every iterations (and the first and last): losses averaged over the processes, lr,
    gradient norm and time -> log.jsonl; the progress bar; validation losses when due."""
    args, info = tr.args, tr.info
    if done % args.log_every == 0 or done == args.iters or done == tr.start_iter + 1:
        rec = reduce_mean(scalars(losses), info.device)
        now = time.time()
        if info.is_main:
            rec.update({"iter": done, "lr": tr.optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                        "time": round(now - tr.t0, 3),
                        "sec_per_iter": round((now - tr.t_last) / max(1, done - tr.it_last), 4)})
            tr.log.write(rec)
            if tr.bar is not None:
                tr.bar.set_postfix(loss=f"{rec['loss']:.3f}")
        tr.t_last, tr.it_last = now, done
    if tr.bar is not None:
        tr.bar.update(1)
    val_due = tr.val_set is not None and ((args.val_every and done % args.val_every == 0) or done == args.iters)
    if val_due and info.is_main:
        v = validation_loss(tr.model, tr.criterion, tr.val_set, args.val_clips, info.device)
        tr.log.write({"iter": done, **{f"val_{k}": x for k, x in v.items()}})


def checkpoint(tr: Training, done: int) -> None:
    """Every --ckpt-every iterations and at the end (main process): state_<iter>.pt (resumable) and the
    weights (model_<iter>.safetensors, model_final.safetensors at the last iteration)."""
    args = tr.args
    if tr.info.is_main and (done % args.ckpt_every == 0 or done == args.iters):
        save_train_state(os.path.join(args.output, f"state_{done:07d}.pt"), tr.model, tr.optimizer, tr.scheduler,
                         done, tr.cfg)
        extra = {"iteration": done, "repulsion": not args.no_repulsion, "criterion": args.criterion,
                 "seed": args.seed}
        name = "model_final.safetensors" if done == args.iters else f"model_{done:07d}.safetensors"
        save_model_weights(tr.model, os.path.join(args.output, name), tr.cfg, extra=extra)


def finish(tr: Training) -> None:
    """Close the bar, report, and leave the process group."""
    args = tr.args
    if tr.bar is not None:
        tr.bar.close()
    if tr.info.is_main:
        print(f"done: {args.iters - tr.start_iter} iterations in {time.time() - tr.t0:.1f} s; "
              f"weights {os.path.join(args.output, 'model_final.safetensors')}", flush=True)
    barrier()
    cleanup()


def train(args: argparse.Namespace) -> int:
    """The training run of parsed ``args``: setup -> model/optimizer -> resume -> data -> output ->
    loop (train_step, log_step, checkpoint per iteration) -> finish."""
    tr = setup(args)
    build_model_and_optimizer(tr)
    resume(tr)
    build_data(tr)
    open_output(tr)
    prepare_loop(tr)
    for it in range(tr.start_iter, args.iters):
        losses, grad_norm = train_step(tr, it)
        done = it + 1
        log_step(tr, done, losses, grad_norm)
        checkpoint(tr, done)
    finish(tr)
    return 0


@cli_main
def main(argv: Optional[List[str]] = None) -> int:
    return train(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
