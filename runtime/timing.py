"""Per-stage timing with bounded memory: exact count/total plus a fixed-size reservoir for quantiles."""
from __future__ import annotations

import random
import time
from array import array
from contextlib import contextmanager
from typing import Dict

import numpy as np

STAGES = ("decode", "preprocess", "encoder", "decoder", "tracker", "postprocess", "write")


class StageStats:
    """Durations (seconds) of one stage: count, total, max, and up to ``capacity`` samples (reservoir)."""

    def __init__(self, capacity: int = 4096, seed: int = 0):
        self.capacity = capacity
        self.samples = array("d")
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._rng = random.Random(seed)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)
        if len(self.samples) < self.capacity:
            self.samples.append(seconds)
        else:
            j = self._rng.randrange(self.count)
            if j < self.capacity:
                self.samples[j] = seconds

    def summary(self) -> Dict[str, float]:
        s = np.frombuffer(self.samples, dtype=np.float64) if len(self.samples) else np.zeros(1)
        return {"calls": self.count, "total_s": round(self.total, 6),
                "mean_ms": round(1e3 * self.total / max(self.count, 1), 4),
                "median_ms": round(1e3 * float(np.median(s)), 4),
                "p90_ms": round(1e3 * float(np.percentile(s, 90)), 4),
                "max_ms": round(1e3 * self.max, 4)}


class StageTimer:
    """``with timer("encoder"): ...`` records the block's wall time under that stage."""

    def __init__(self, stages=STAGES):
        self.stats: Dict[str, StageStats] = {s: StageStats() for s in stages}

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        if stage not in self.stats:
            self.stats[stage] = StageStats()
        self.stats[stage].add(seconds)

    def summary(self) -> Dict[str, Dict[str, float]]:
        return {k: v.summary() for k, v in self.stats.items()}
