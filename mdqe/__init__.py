"""MDQE: Mining Discriminative Query Embeddings for video instance segmentation (CVPR 2023)."""
from .config import PRESETS, ModelConfig, get_config

__version__ = "0.1.0"


def build_model(name_or_config="r50_ytvis21"):
    """Build an MDQE model (randomly initialised) from a preset name, a ModelConfig or a dict."""
    from .model import MDQE
    return MDQE(get_config(name_or_config))


__all__ = ["build_model", "get_config", "ModelConfig", "PRESETS", "__version__"]
