"""The output folder of a run: checked before any work, locked while a run writes, cleaned of a killed
run's leftovers, and left with the outputs of one run only.

    check_output_dir(path, outputs)  -> raises OutputError before any model work
    OutputLock(path)                 -> one run per folder; removes leftovers of killed runs
    remove_stale(path, written)      -> drops outputs an older run wrote that this run did not

Leftovers are what a run killed by SIGKILL (or a power cut) can leave: the results spool
(``.spool-*/``), temporaries of atomic writes (``.results.json.*``, ``.overlay.mp4.*.mp4``,
``.timing.json.*``) and the staging folder of mask PNGs (``.masks-*/``). They are removed by the
next run into the same folder once it holds the folder's lock (so a run still writing there is
never disturbed: a second run is refused instead).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import struct
import tempfile
from typing import Iterable, List

from .errors import OutputError

# Files and folders a run writes under --output.
OUTPUT_FILES = ("results.json", "overlay.mp4", "timing.json")
OUTPUT_DIRS = ("masks",)
LOCK_NAME = ".mdqe-run.lock"
LEFTOVER_DIR_PREFIXES = (".spool-", ".masks-")

_FS_IOC_GETFLAGS = 0x80086601   # linux/fs.h: _IOR('f', 1, long)
_FS_IMMUTABLE_FL = 0x00000010
_FS_APPEND_FL = 0x00000020


def _unchangeable(path: str) -> bool:
    """True when ``path`` carries the immutable or append-only attribute (chattr +i / +a): then it can
    be neither replaced nor removed, even by root. False when the file system does not say."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        buf = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("l", 0))
        flags = struct.unpack("l", buf)[0]
        return bool(flags & (_FS_IMMUTABLE_FL | _FS_APPEND_FL))
    except OSError:
        return False
    finally:
        os.close(fd)


def check_output_dir(path: str, outputs: Iterable[str] = OUTPUT_FILES + OUTPUT_DIRS) -> None:
    """Raise OutputError (one line) unless ``path`` can take this run's outputs: it is a folder (or can
    be created), files can be created and renamed there, and no output it will replace is a folder
    where a file is expected or an immutable/append-only file. Creates ``path`` when missing."""
    if not isinstance(path, str) or not path.strip():
        raise OutputError("--output must be a folder path")
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"--output {path} is an existing file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the output folder {path}: {e.strerror or e}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".mdqe-probe-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OutputError(f"cannot write to the output folder {path}: {e.strerror or e}") from None
    for name in outputs:
        p = os.path.join(path, name)
        if name in OUTPUT_DIRS:
            if os.path.exists(p) and not os.path.isdir(p):
                raise OutputError(f"{p} is a file, but this run writes a folder there; move it away")
            continue
        if os.path.isdir(p):
            raise OutputError(f"{p} is a folder, but this run writes a file there; move it away")
        if os.path.exists(p) and _unchangeable(p):
            raise OutputError(f"{p} is immutable or append-only (chattr +i/+a): this run could not replace it")


def leftovers(path: str) -> List[str]:
    """Paths in ``path`` that a killed run may have left behind (see the module doc)."""
    found = []
    try:
        names = os.listdir(path)
    except OSError:
        return found
    temp_prefixes = tuple("." + n + "." for n in OUTPUT_FILES)
    for n in names:
        p = os.path.join(path, n)
        if n.startswith(LEFTOVER_DIR_PREFIXES) and os.path.isdir(p) and not os.path.islink(p):
            found.append(p)
        elif n.startswith(temp_prefixes) and os.path.isfile(p):
            found.append(p)
    return sorted(found)


def _remove(p: str) -> None:
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)


class OutputLock:
    """Holds an exclusive lock (flock) on ``path/.mdqe-run.lock`` for one run; on entry removes the
    leftovers of killed runs (``removed`` lists them). A second run into the same folder while the
    first is alive gets an OutputError. The kernel drops the lock when a process dies, so a killed
    run never blocks the next one."""

    def __init__(self, path: str):
        self.path = path
        self.lock_path = os.path.join(path, LOCK_NAME)
        self.fd = None
        self.removed: List[str] = []

    def __enter__(self) -> "OutputLock":
        try:
            self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"cannot write to the output folder {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self.fd)
            self.fd = None
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"another run is writing to {self.path}; wait for it or choose another "
                                  "--output") from None
            raise OutputError(f"cannot lock the output folder {self.path}: {e.strerror or e}") from None
        for p in leftovers(self.path):
            _remove(p)
            self.removed.append(p)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.remove(self.lock_path)
            os.close(self.fd)
            self.fd = None


def remove_stale(path: str, written: Iterable[str]) -> List[str]:
    """Remove the outputs in ``path`` (OUTPUT_FILES, OUTPUT_DIRS) that this run did not write, so the
    folder never holds outputs of two runs side by side (e.g. an older overlay.mp4 beside the results
    of a --no-overlay rerun). Returns what was removed."""
    written = set(written)
    removed = []
    for name in OUTPUT_FILES + OUTPUT_DIRS:
        p = os.path.join(path, name)
        if name not in written and os.path.lexists(p):
            _remove(p)
            removed.append(p)
    return removed
