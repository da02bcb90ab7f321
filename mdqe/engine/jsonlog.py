"""JSON-lines loss log: one object per logged iteration, appended with a single write."""
from __future__ import annotations

import json
import os
from typing import List

from runtime.atomic import write_text


class JsonlLog:
    """``log.write({"iter": i, ...})`` appends one line; whole lines only (O_APPEND, one write).

    ``truncate_after(it)`` drops records with ``iter > it`` (on resume), rewriting
    the file atomically (temp + rename).
    """

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def read(self) -> List[dict]:
        if not os.path.exists(self.path):
            return []
        out = []
        with open(self.path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a torn last line from a crash
        return out

    def truncate_after(self, iteration: int) -> None:
        keep = [r for r in self.read() if int(r.get("iter", -1)) <= iteration]
        write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep), durable=True)
