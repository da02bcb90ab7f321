"""Facts about the machine a GPU (or CPU dry-run) measurement ran on, stamped into every result file.

`environment(device)` -> {"device", "driver", "cuda", "nvcc", "torch", "python", "capability", ...}:
the GPU name and driver from torch and nvidia-smi (when present), torch's CUDA runtime version, the
nvcc release, torch and Python versions, cuDNN, and the CPU. Nothing here fails: a fact that cannot
be read is "n/a".
"""
from __future__ import annotations

import platform
import re
import shutil
import subprocess
from functools import lru_cache


def _run(cmd) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return r.stdout if r.returncode == 0 else ""


def nvcc_version() -> str:
    """'13.0' from `nvcc --version`, or 'n/a'."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if shutil.which("/usr/local/cuda/bin/nvcc") else None)
    m = re.search(r"release ([0-9.]+)", _run([nvcc, "--version"])) if nvcc else None
    return m.group(1) if m else "n/a"


def nvidia_smi() -> dict:
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if not out.strip():
        return {}
    name, driver, mem = (x.strip() for x in out.strip().splitlines()[0].split(",")[:3])
    return {"smi_name": name, "driver": driver, "memory_total": mem}


@lru_cache(maxsize=4)
def _environment(device: str) -> tuple:
    import torch

    from benchmarks.fps import cpu_description
    env = {"device": "n/a", "driver": "n/a", "cuda": torch.version.cuda or "n/a (CPU build of torch)",
           "nvcc": nvcc_version(), "torch": torch.__version__, "python": platform.python_version(),
           "cudnn": "n/a", "capability": "n/a", "cpu": cpu_description()}
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        env.update(device=torch.cuda.get_device_name(idx), capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cudnn=str(torch.backends.cudnn.version()))
        smi = nvidia_smi()
        if smi:
            env["driver"] = smi["driver"]
    else:
        env["device"] = f"cpu ({env['cpu']})"
    return tuple(env.items())


def environment(device: str = "cuda") -> dict:
    return dict(_environment(device))


def slug(text: str) -> str:
    """'NVIDIA H200' -> 'nvidia_h200' (for folder names)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
