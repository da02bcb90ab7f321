"""Command line: ``python -m runtime.infer`` with the torch backend registered.

    python -m mdqe.infer --model DIR --video PATH --output DIR --backend torch [--weights CKPT] [--device cuda]

The same parser, options, outputs and exit statuses as ``python -m runtime.infer`` (its ``main``
runs unchanged); this entry point only adds ``--backend torch`` (``mdqe.backend.TorchBackend``,
the PyTorch model in-process), which the torch-free runtime cannot offer on its own.
"""
from __future__ import annotations

import sys

from runtime.infer import run   # first: it caps the BLAS threads before numpy loads
from runtime.cli import cli_main

from .backend import register


@cli_main
def main(argv=None) -> int:
    register()
    return run(argv, prog="python -m mdqe.infer")


if __name__ == "__main__":
    sys.exit(main())
