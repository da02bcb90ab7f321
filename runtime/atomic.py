"""Atomic file writes (write to a temporary file in the same folder, then rename over the target)
and the small file helpers they share: the process umask, a file's sha256."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it.

    ``suffix`` keeps the extension (OpenCV picks encoders by extension).
    """
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix or ".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        _public(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def current_umask() -> int:
    """The process umask (os.umask can only be read by setting it)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _public(path: str) -> None:
    """mkstemp creates 0600 files; give outputs the usual permissions (0666 minus the umask)."""
    os.chmod(path, 0o666 & ~current_umask())


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_text(path: str, text: str) -> None:
    """Atomically write a text file (utf-8)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path: str, obj, indent: int | None = 2) -> None:
    """Atomically write ``obj`` as JSON."""
    write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_bytes(path: str, data: bytes) -> None:
    """Atomically write a binary file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
