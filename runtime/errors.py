"""Error types of the runtime. Each names the problem so the CLI can print it as is."""


class RuntimeErrorBase(Exception):
    """Base of every error the runtime raises on purpose (the CLI prints these without a traceback)."""


class VideoError(RuntimeErrorBase):
    """The input video is missing, unreadable, corrupt or has no frames."""


class ModelDirError(RuntimeErrorBase):
    """The exported model directory is missing files or does not match INTERFACES.md section 5."""


class BackendUnavailableError(RuntimeErrorBase):
    """The selected backend cannot run here (package missing, no GPU, ...)."""


class PluginLibraryError(RuntimeErrorBase):
    """A native library the graphs need (TensorRT plugin, custom-op library) cannot be found or loaded."""
