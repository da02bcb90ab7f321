"""Shapes and textures of the synthetic occluded-video dataset (numpy + OpenCV, torch-free).

Each object is drawn once on a square local canvas (``canvas`` x ``canvas``
pixels, shape centred, "radius" = canvas / 4) together with its texture;
per frame the canvas is warped into the image with a similarity transform
(rotation, scale, translation), so the texture moves with the object.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

SHAPES = ("disc", "square", "triangle", "ring", "cross")  # == mdqe.config.SYNTHETIC_CLASSES


def shape_mask(shape: str, canvas: int) -> np.ndarray:
    """[canvas, canvas] float32 in {0, 1}: the shape centred on the canvas, radius canvas/4."""
    c = canvas / 2.0
    r = canvas / 4.0
    m = np.zeros((canvas, canvas), np.uint8)
    shift = 4  # sub-pixel precision for OpenCV drawing
    s = 1 << shift

    def pts(xy):
        return np.round(np.asarray(xy) * s).astype(np.int32).reshape(-1, 1, 2)

    if shape == "disc":
        cv2.circle(m, (int(c * s), int(c * s)), int(r * s), 1, -1, cv2.LINE_8, shift)
    elif shape == "ring":
        cv2.circle(m, (int(c * s), int(c * s)), int(r * s), 1, -1, cv2.LINE_8, shift)
        cv2.circle(m, (int(c * s), int(c * s)), int(0.55 * r * s), 0, -1, cv2.LINE_8, shift)
    elif shape == "square":
        h = 0.85 * r
        cv2.fillPoly(m, [pts([[c - h, c - h], [c + h, c - h], [c + h, c + h], [c - h, c + h]])], 1, cv2.LINE_8, shift)
    elif shape == "triangle":
        ang = np.deg2rad([-90, 30, 150])
        tri = np.stack([c + 1.1 * r * np.cos(ang), c + 1.1 * r * np.sin(ang) + 0.15 * r], 1)
        cv2.fillPoly(m, [pts(tri)], 1, cv2.LINE_8, shift)
    elif shape == "cross":
        a, b = 0.32 * r, 1.0 * r
        cv2.fillPoly(m, [pts([[c - a, c - b], [c + a, c - b], [c + a, c + b], [c - a, c + b]])], 1, cv2.LINE_8, shift)
        cv2.fillPoly(m, [pts([[c - b, c - a], [c + b, c - a], [c + b, c + a], [c - b, c + a]])], 1, cv2.LINE_8, shift)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return m.astype(np.float32)


def random_color(rng: np.random.Generator) -> np.ndarray:
    """A saturated RGB colour, float32 [3] in 0..255."""
    hsv = np.array([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(150, 256)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def object_texture(rng: np.random.Generator, canvas: int) -> np.ndarray:
    """[canvas, canvas, 3] float32 RGB texture: two colours mixed by stripes, checks or blobs."""
    c1, c2 = random_color(rng), random_color(rng)
    yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32)
    kind = rng.integers(0, 3)
    period = float(rng.uniform(6, 14))
    if kind == 0:  # stripes at a random angle
        ang = rng.uniform(0, np.pi)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period)
    elif kind == 1:  # checks
        t = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    else:  # smooth blobs
        small = rng.random((max(2, canvas // 8), max(2, canvas // 8))).astype(np.float32)
        t = cv2.resize(small, (canvas, canvas), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    tex = c1[None, None] * t[..., None] + c2[None, None] * (1 - t[..., None])
    tex += rng.normal(0, 6, tex.shape).astype(np.float32)
    return tex


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """[H, W, 3] float32 RGB: low-frequency coloured noise plus fine grain, muted colours."""
    base = rng.uniform(60, 190, 3).astype(np.float32)
    low = rng.normal(0, 1, (max(2, height // 24), max(2, width // 24), 3)).astype(np.float32)
    low = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC) * 28.0
    grain = rng.normal(0, 10, (height, width, 3)).astype(np.float32)
    return base[None, None] + low + grain


def warp_matrix(center: Tuple[float, float], scale: float, angle_deg: float, canvas: int) -> np.ndarray:
    """2x3 affine map from canvas coordinates to image coordinates."""
    m = cv2.getRotationMatrix2D((canvas / 2.0, canvas / 2.0), angle_deg, scale)
    m[0, 2] += center[0] - canvas / 2.0
    m[1, 2] += center[1] - canvas / 2.0
    return m


def render_object(mask: np.ndarray, texture: np.ndarray, matrix: np.ndarray,
                  height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Warp a canvas mask [c, c] and texture [c, c, 3] into a [H, W] image.

    Returns (binary full mask [H, W] bool, texture [H, W, 3] float32).
    """
    size = (width, height)
    m = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0.0) >= 0.5
    tex = cv2.warpAffine(texture, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return m, tex
