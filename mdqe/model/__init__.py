"""MDQE model package: `from mdqe.model import MDQE`."""
from .mdqe import MDQE

__all__ = ["MDQE"]
