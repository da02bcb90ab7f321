"""Run a real ``tritonserver`` on loopback ports: the binary bundled in the ``nvidia-pytriton`` wheel
(Python backend included) or any other one given by path.

    python -m runtime.serving.server --repo REPO [--grpc-port P] [--http-port P] [--metrics-port P]
    mdqe-serve ...                        (the same, as a console script)

Exit status (runtime/cli.py): 0 the server stopped cleanly (Ctrl-C / SIGTERM), 1 it exited with an
error, 2 it could not be started.

How the bundled server is started (docs/serving.md): its ``backends/`` folder is copied
to a private folder and the Python-backend stub for this interpreter's version is put into
``backends/python/``; ``LD_LIBRARY_PATH`` gets the wheel's ``nvidia_pytriton.libs`` and this
Python's library folder; this interpreter's ``bin`` goes first on ``PATH`` (the stub runs models
with the ``python3`` found there, so models import this environment's packages);
``PYTHONPATH`` gets the folder holding the ``runtime`` package so that the models import this
checkout. The server is started in its own process group, bound to 127.0.0.1 only, and always
stopped (``stop()``, context manager, atexit): SIGTERM to the group, then SIGKILL after a grace
period.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ..cli import EXIT_FAILED, EXIT_OK, cli_main, make_parser
from ..errors import BackendUnavailableError, RuntimeErrorBase

_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # holds runtime/


class ServerError(RuntimeErrorBase):
    """The server could not be started, did not become ready, or died."""


@dataclass(frozen=True)
class BundledServer:
    """Paths inside an installed nvidia-pytriton wheel."""
    binary: str
    backends: str
    stubs: str
    libs: str


def find_bundled_server() -> BundledServer:
    """Locate tritonserver inside the installed ``nvidia-pytriton`` wheel without importing
    pytriton (its Python package needs extra client packages that serving does not use)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError("serving needs the tritonserver binary bundled in nvidia-pytriton: "
                                      "pip install --no-deps nvidia-pytriton==0.7.0 (docs/serving.md), "
                                      "or pass --tritonserver PATH")
    root = os.path.join(list(spec.submodule_search_locations)[0], "tritonserver")
    site = os.path.dirname(list(spec.submodule_search_locations)[0])
    found = BundledServer(os.path.join(root, "bin", "tritonserver"), os.path.join(root, "backends"),
                          os.path.join(root, "python_backend_stubs"), os.path.join(site, "nvidia_pytriton.libs"))
    if not os.path.isfile(found.binary):
        raise BackendUnavailableError(f"nvidia-pytriton is installed but has no tritonserver binary at {found.binary}")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare_backends(bundled: BundledServer, folder: str) -> str:
    """Copy the bundled backends to ``folder`` with the Python stub of this interpreter's version."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = os.path.join(bundled.stubs, ver, "triton_python_backend_stub")
    if not os.path.isfile(stub):
        have = sorted(os.listdir(bundled.stubs)) if os.path.isdir(bundled.stubs) else []
        raise BackendUnavailableError(f"nvidia-pytriton has no Python-backend stub for Python {ver} "
                                      f"(has: {', '.join(have)})")
    dst = os.path.join(folder, "backends")
    shutil.copytree(bundled.backends, dst, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, os.path.join(dst, "python", "triton_python_backend_stub"))
    return dst


class TritonServer:
    """One tritonserver process serving ``repo`` on 127.0.0.1.

    ``with TritonServer(repo) as srv: srv.grpc_url`` starts it and waits until ready (``timeout_s``);
    the log goes to ``srv.log_path``. ``extra_args`` are appended to the command line
    (e.g. ``["--backend-config=tensorrt,plugins=/path/libmdqe_trt_plugin.so"]``).
    """

    def __init__(self, repo: str, grpc_port: int = 0, http_port: int = 0, metrics_port: int = 0,
                 tritonserver: Optional[str] = None, backend_directory: Optional[str] = None,
                 extra_args: Sequence[str] = (), log_path: Optional[str] = None, log_verbose: int = 0,
                 env: Optional[Dict[str, str]] = None, exit_timeout_s: int = 10):
        self.repo = os.path.abspath(repo)
        if not os.path.isdir(self.repo):
            raise ServerError(f"model repository not found: {repo}")
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self._tmp = tempfile.mkdtemp(prefix="mdqe-triton-")
        self.log_path = log_path or os.path.join(self._tmp, "tritonserver.log")
        self.proc: Optional[subprocess.Popen] = None
        self.exit_timeout_s = exit_timeout_s
        env_all = dict(os.environ)
        if tritonserver is None:
            bundled = find_bundled_server()
            binary = bundled.binary
            backend_directory = backend_directory or _prepare_backends(bundled, self._tmp)
            libdir = sysconfig.get_config_var("LIBDIR") or ""
            env_all["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (bundled.libs, libdir, env_all.get("LD_LIBRARY_PATH", "")) if p)
        else:
            binary = tritonserver
        env_all["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env_all.get("PATH", "")
        env_all["PYTHONPATH"] = os.pathsep.join(p for p in (_PKG_ROOT, env_all.get("PYTHONPATH", "")) if p)
        for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):   # see docs/runtime.md
            env_all.setdefault(var, "1")
        env_all.update(env or {})
        self.env = env_all
        self.cmd: List[str] = [binary, "--model-repository", self.repo,
                               "--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1",
                               "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                               "--metrics-port", str(self.metrics_port), "--allow-gpu-metrics=false",
                               "--exit-timeout-secs", str(exit_timeout_s), "--log-verbose", str(log_verbose)]
        if backend_directory:
            self.cmd += ["--backend-directory", backend_directory]
        self.cmd += list(extra_args)

    # -- urls -----------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    # -- lifecycle ------------------------------------------------------------
    def start(self, timeout_s: float = 120.0) -> "TritonServer":
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)      # own process group: stop() kills it all
        finally:
            log.close()
        atexit.register(self.stop)
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def http_get(self, path: str, timeout: float = 2.0):
        """(status, body) of GET on the HTTP endpoint, e.g. ``/v2/health/ready``; (None, error) if unreachable."""
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError as e:
            return None, str(e).encode()

    def wait_ready(self, timeout_s: float) -> None:
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise ServerError(f"tritonserver exited with status {self.proc.returncode} during startup; "
                                  f"log tail:\n{self.log_tail()}")
            status, _ = self.http_get("/v2/health/ready", timeout=1.0)
            if status == 200:
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s; log tail:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: Optional[float] = None) -> Optional[int]:
        """SIGTERM the server's process group (Triton unloads the models and exits), SIGKILL after
        ``grace_s``. Returns the exit status (None if never started). Safe to call twice."""
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self.proc is None:
            shutil.rmtree(os.path.join(self._tmp, "backends"), ignore_errors=True)
            return None
        grace = self.exit_timeout_s + 5 if grace_s is None else grace_s
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # stubs are in the same group; make sure none survives the server
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(os.path.join(self._tmp, "backends"), ignore_errors=True)   # the log stays
        return self.proc.returncode

    def __enter__(self) -> "TritonServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


@cli_main
def main(argv=None) -> int:
    p = make_parser("python -m runtime.serving.server", __doc__.split("\n\n")[0], also=("mdqe-serve",))
    p.add_argument("--repo", required=True, help="model repository (export/to_triton.py --output)")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--tritonserver", default=None, help="tritonserver binary (default: the one bundled in nvidia-pytriton)")
    p.add_argument("--backend-directory", default=None)
    p.add_argument("--log", default=None, help="server log file (default: a temporary folder)")
    p.add_argument("extra", nargs="*", help="more tritonserver arguments after --")
    args = p.parse_args(argv)
    srv = TritonServer(args.repo, args.grpc_port, args.http_port, args.metrics_port, args.tritonserver,
                       args.backend_directory, args.extra, args.log)
    srv.start()                                     # ServerError: one line, exit 2
    print(f"ready: grpc {srv.grpc_url}  http {srv.http_url}  metrics {srv.metrics_url}  log {srv.log_path}",
          flush=True)
    try:
        while srv.running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        rc = srv.stop()
    return EXIT_OK if rc in (0, None, -signal.SIGTERM) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
