"""Error types of the runtime. Each names the problem so the CLI can print it as is."""


class RuntimeErrorBase(Exception):
    """Base of every error the runtime raises on purpose (the CLI prints these without a traceback).

    ``exit_code``: the CLI's exit status for it (2 = bad input the user can fix)."""

    exit_code = 2


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


class NonFiniteError(RuntimeErrorBase):
    """A model stage produced NaN or infinite values (broken weights or export): verification failed."""

    exit_code = 3
