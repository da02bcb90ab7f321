"""Atomic file writes (write to a temporary file in the same folder, then rename over the target)
and the small file helpers they share: the process umask, a file's sha256.

The one home of atomic writes for every layer: ``write_text`` / ``write_json`` / ``write_bytes``,
``write_with(path, writer)`` for writers that take a path (``torch.save``, safetensors, OpenCV),
``atomic_path`` (the context manager under them) and ``publish_dir`` (move a staged folder's
files into place). ``durable=True`` also fsyncs the data before the rename."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import shutil
from typing import Callable, Iterator, Sequence


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "", durable: bool = False) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it.

    ``suffix`` keeps the extension (OpenCV picks encoders by extension). ``durable``: fsync the
    file's data before the rename (a crash then leaves the old or the new file, complete).
    """
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix or ".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        _public(tmp)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def write_with(path: str, writer: Callable[[str], object], suffix: str = "", durable: bool = False) -> None:
    """Atomically write ``path`` with ``writer(tmp_path)`` (e.g. ``lambda p: torch.save(obj, p)``)."""
    with atomic_path(path, suffix=suffix, durable=durable) as tmp:
        writer(tmp)


def write_text(path: str, text: str, durable: bool = False) -> None:
    """Atomically write a text file (utf-8)."""
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path: str, obj, indent: int | None = 2, durable: bool = False) -> None:
    """Atomically write ``obj`` as JSON."""
    write_text(path, json.dumps(obj, indent=indent) + "\n", durable=durable)


def write_bytes(path: str, data: bytes, durable: bool = False) -> None:
    """Atomically write a binary file."""
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def publish_dir(staged: str, out: str, names: Sequence[str]) -> None:
    """Move the finished files ``names`` of the folder ``staged`` into ``out``: a new ``out`` is the
    staged folder renamed in one step; in an existing ``out`` each file is replaced atomically in
    the order of ``names`` (put the file that marks the set complete last), then ``staged`` is
    removed. Files and folder get the usual permissions (0666 / 0777 minus the umask)."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    umask = current_umask()
    for name in os.listdir(staged):
        os.chmod(os.path.join(staged, name), 0o666 & ~umask)
    if not os.path.exists(out):
        os.chmod(staged, 0o777 & ~umask)
        try:
            os.rename(staged, out)
            return
        except OSError:
            if not os.path.isdir(out):
                raise
    for name in names:
        os.replace(os.path.join(staged, name), os.path.join(out, name))
    shutil.rmtree(staged, ignore_errors=True)
