"""Error types of the project. Each names the problem so the CLI can print it as is; its
``exit_code`` is the command's exit status (runtime/cli.py). The error types of mdqe/, export/ and
tools/ derive from ``RuntimeErrorBase`` (or ``VerificationFailed``) so every command maps them the
same way."""


class RuntimeErrorBase(Exception):
    """Base of every error the runtime raises on purpose (the CLI prints these without a traceback).

    ``exit_code``: the CLI's exit status for it (2 = bad input the user can fix)."""

    exit_code = 2


class UsageError(RuntimeErrorBase):
    """A bad command-line value or combination of flags (exit 2)."""


class VerificationFailed(RuntimeErrorBase):
    """A check of the results failed (an export differs from PyTorch, NaN/inf, a parity check): exit 3."""

    exit_code = 3


class VideoError(RuntimeErrorBase):
    """The input video is missing, unreadable, corrupt or has no frames."""


class ModelDirError(RuntimeErrorBase):
    """The exported model directory is missing files or does not match INTERFACES.md section 5."""


class BackendUnavailableError(RuntimeErrorBase):
    """The selected backend cannot run here (package missing, no GPU, ...)."""


class PluginLibraryError(RuntimeErrorBase):
    """A native library the graphs need (TensorRT plugin, custom-op library) cannot be found or loaded."""


class OutputError(RuntimeErrorBase):
    """The output location cannot be written (a file where a folder is needed, read-only, immutable
    files, another run writing there)."""


class NonFiniteError(VerificationFailed):
    """A model stage produced NaN or infinite values (broken weights or export): verification failed."""
