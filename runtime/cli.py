"""The one command-line convention of every entry point: shared flags, exit codes, error reporting.

Every command of the project (``python -m ...`` and the ``mdqe-*`` console scripts) builds its
parser with ``make_parser`` (which adds the exit-code epilog to ``--help``), declares the shared
concepts with the ``add_*_arg`` helpers below (one concept, one flag name, one vocabulary), and
wraps its ``main(argv=None) -> int`` with ``cli_main`` (which turns the project's error types into
one line on stderr and the exit code below). Torch-free: the runtime's floor; everything above
(mdqe/, export/, benchmarks/, tools/) imports it. The vocabulary is docs/INTERFACES.md section 7.

Exit codes (``EPILOG``):
  0    ok;
  1    failed otherwise: an unexpected error (a bug: Python prints the traceback), or a measured
       step that failed (a benchmark stage, a server that exited with an error);
  2    bad input the user can fix (missing/corrupt file, bad flag value, unwritable output, missing
       package or library, unavailable backend): one line naming the problem;
  3    verification failed (an export differs from PyTorch, a model produced NaN/inf, a parity
       check failed);
  4    runtime commands: stopped early because of the input (truncated video, stream lost); the
       outputs cover the frames read;
  130  interrupted (Ctrl-C, SIGINT), 143 terminated (SIGTERM).
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from typing import Callable, Optional, Sequence

from .errors import RuntimeErrorBase, UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_VERIFY = 3
EXIT_STOPPED_EARLY = 4
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}

EPILOG = """exit status:
  0    ok
  1    failed otherwise (an unexpected error with its traceback, a failed benchmark stage)
  2    bad input the user can fix (one line on stderr names the problem)
  3    verification failed (outputs differ from the reference, NaN/inf, parity)
  4    stopped early because of the input; outputs cover what was read (runtime commands)
  130  interrupted (Ctrl-C), 143 terminated (SIGTERM)"""

RUNTIME_BACKENDS = ("ort", "trt", "torch", "fake")
PRECISIONS = ("fp32", "fp16")
_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+)$")


# ----------------------------------------------------------------------------------------------
# value types (argparse ``type=``): a bad value is a one-line usage error, exit 2
# ----------------------------------------------------------------------------------------------
def parse_device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``: the one device vocabulary (torch's spelling)."""
    value = text.strip().lower()
    if not _DEVICE_RE.match(value):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return value


def _int_at_least(lo: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = lo - 1
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def parse_hw(text: str):
    """``HxW`` (e.g. ``384x640``) -> (H, W), both positive."""
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 384x640, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected a positive HxW, got {text!r}")
    return h, w


# ----------------------------------------------------------------------------------------------
# the parser and the shared flags
# ----------------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse with the house rule for bad input: one line naming the problem, exit 2 (argparse
    would print the whole usage first)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (--help lists the options)\n")


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each flag's default and keeps the description's and epilog's line breaks."""


def make_parser(prog: str, description: Optional[str] = None, show_defaults: bool = False,
                also: Sequence[str] = (), **kwargs) -> argparse.ArgumentParser:
    """An ArgumentParser whose ``--help`` ends with the exit codes (``EPILOG``). ``prog`` is how the
    user runs it (``python -m mdqe.train``); ``also``: the other ways (the console script, ...),
    named in the epilog; the description keeps its line breaks; ``show_defaults``: every flag's
    help shows its default."""
    kwargs.setdefault("formatter_class",
                      DefaultsFormatter if show_defaults else argparse.RawDescriptionHelpFormatter)
    parts = [kwargs.pop("epilog", None), ("also runs as: " + ", ".join(also)) if also else None, EPILOG]
    return Parser(prog=prog, description=description, epilog="\n\n".join(p for p in parts if p), **kwargs)


def add_model_arg(p, required: bool = False, help: Optional[str] = None):
    """``--model DIR``: an exported model directory (encoder.onnx, decoder.onnx, export.json)."""
    return p.add_argument("--model", required=required, default=None, metavar="DIR",
                          help=help or "exported model directory (encoder.onnx, decoder.onnx, export.json; "
                                       "written by export/to_onnx.py)")


def add_output_arg(p, required: bool = True, default: Optional[str] = None, help: Optional[str] = None):
    """``--output DIR``: where the command writes what it makes (a folder unless the help says a file)."""
    return p.add_argument("--output", required=required, default=default, metavar="DIR",
                          help=help or "output folder")


def add_video_arg(p, required: bool = True, help: Optional[str] = None):
    """``--video PATH``: a video file, a folder of frames, a stream URL or a camera index."""
    return p.add_argument("--video", required=required, default=None, metavar="PATH",
                          help=help or "video file, folder of frames, stream URL, or camera index")


def add_device_arg(p, default: str = "cpu", help: Optional[str] = None):
    """``--device cpu|cuda|cuda:N`` (PyTorch device), validated by ``parse_device``."""
    return p.add_argument("--device", type=parse_device, default=default, metavar="cpu|cuda|cuda:N",
                          help=(help or "PyTorch device") + f" (default {default})")


def add_precision_arg(p, default: str = "fp32", help: Optional[str] = None):
    """``--precision fp32|fp16``."""
    return p.add_argument("--precision", choices=PRECISIONS, default=default,
                          help=(help or "numeric precision") + f" (default {default})")


def add_backend_arg(p, default: str = "ort", choices: Sequence[str] = RUNTIME_BACKENDS,
                    help: Optional[str] = None):
    """``--backend ort|trt|torch|fake``: the runtime backend that runs the two graphs."""
    return p.add_argument("--backend", choices=tuple(choices), default=default,
                          help=help or f"runtime backend (default {default})")


def add_providers_arg(p, help: Optional[str] = None):
    """``--providers cpu|auto|A,B``: ONNX Runtime execution providers (backend ort)."""
    return p.add_argument("--providers", default=None,
                          help=help or "ort: ONNX Runtime providers: cpu (default), auto (CUDA when available), "
                                       "or a comma list of provider names")


def add_plugin_lib_arg(p, help: Optional[str] = None):
    """``--plugin-lib PATH``: the TensorRT plugin library (libmdqe_trt_plugin.so)."""
    return p.add_argument("--plugin-lib", default=None, metavar="PATH",
                          help=help or "path of libmdqe_trt_plugin.so (TensorRT, plugin-form exports)")


def add_threads_arg(p, default: int = 0, help: Optional[str] = None):
    """``--threads N``: CPU threads (0 = the library's default)."""
    return p.add_argument("--threads", type=non_negative_int, default=default, metavar="N",
                          help=(help or "CPU intra-op threads") + " (0 = the library's default)")


def add_seed_arg(p, default: int = 0, help: Optional[str] = None):
    """``--seed N``."""
    return p.add_argument("--seed", type=int, default=default,
                          help=(help or "random seed") + f" (default {default})")


def add_progress_arg(p):
    """``--no-progress``: no progress bar / progress lines (``args.no_progress``)."""
    return p.add_argument("--no-progress", action="store_true", help="no progress output")


def add_report_arg(p, help: Optional[str] = None):
    """``--report FILE.json``: also write the command's numbers as JSON there."""
    return p.add_argument("--report", default=None, metavar="FILE.json",
                          help=help or "also write the results as JSON to this file")


def add_max_frames_arg(p, help: Optional[str] = None):
    """``--max-frames N``: read at most N frames of the input."""
    return p.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                          help=help or "read at most N frames of the video")


def add_image_size_args(p, height: Optional[int] = None, width: Optional[int] = None,
                        help: str = "input image"):
    """``--height H --width W``: an image size in pixels."""
    p.add_argument("--height", type=positive_int, default=height, metavar="H",
                   help=f"{help} height" + (f" (default {height})" if height else ""))
    p.add_argument("--width", type=positive_int, default=width, metavar="W",
                   help=f"{help} width" + (f" (default {width})" if width else ""))


# ----------------------------------------------------------------------------------------------
# the main() wrapper
# ----------------------------------------------------------------------------------------------
def error(message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Print ``error: message`` on stderr and return ``code`` (for ``return error(...)`` in main)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def cli_main(fn: Callable[..., Optional[int]]) -> Callable[..., int]:
    """Decorator of every ``main(argv=None) -> int``: the project's errors (``RuntimeErrorBase`` and
    its subclasses in mdqe/, export/, tools/) become one line and their ``exit_code``; OSError (disk
    full, permission denied) exits 2; Ctrl-C 130 (SIGTERM raised as KeyboardInterrupt("SIGTERM"):
    143). The parser's own exits become the return value (``--help`` 0, a bad flag 2), so ``main``
    always returns its exit status. Anything else is a bug: traceback, exit 1."""
    @functools.wraps(fn)
    def main(argv: Optional[Sequence[str]] = None) -> int:
        try:
            code = fn(argv)
        except SystemExit as e:            # argparse (--help, a bad flag) or a step's own exit status
            if e.code is None or isinstance(e.code, int):
                return e.code or EXIT_OK
            print(e.code, file=sys.stderr)
            return EXIT_FAILED
        except RuntimeErrorBase as e:
            return error(str(e), e.exit_code)
        except KeyboardInterrupt as e:     # the runtime raises KeyboardInterrupt("SIGTERM") for SIGTERM
            name = str(e) if str(e) in EXIT_SIGNAL else "SIGINT"
            print(f"interrupted ({name})", file=sys.stderr)
            return EXIT_SIGNAL[name]
        except OSError as e:
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            return error(f"{e.strerror or e}{where}", EXIT_BAD_INPUT)
        return EXIT_OK if code is None else int(code)
    return main


def require(condition: bool, message: str) -> None:
    """Raise ``UsageError(message)`` (exit 2) unless ``condition``."""
    if not condition:
        raise UsageError(message)
