"""Moving a batch of training samples (INTERFACES.md section 4) to a device.

Batching itself is ``mdqe.data.collate_clips``.
"""
from __future__ import annotations

from typing import List

import torch


def targets_to(targets: List[dict], device) -> List[dict]:
    """Per-clip target dicts with every tensor moved to ``device`` (other values kept)."""
    return [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
