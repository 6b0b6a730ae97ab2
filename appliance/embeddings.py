"""Image embeddings, a 2-D layout and clusters, with numpy and Pillow only.

Features. With no pretrained network on the appliance, an image is described by a
fixed, deterministic descriptor (`describe`), 164 numbers:

- a joint RGB colour histogram, 4 x 4 x 4 bins (64);
- the grey image shrunk to 8 x 8, centred and scaled to unit length (64);
- a histogram of gradient orientations, 9 unsigned bins weighted by gradient
  magnitude, in each quarter of a 64 x 64 grey copy (36).

Each block is scaled to unit length, weighted, and the whole vector is scaled to
unit length again. When a trained model is chosen instead, its own pooled
features (the layer before the head, through `vision.Predictor.embed`) are used,
scaled to unit length the same way.

Layout (`analyse`), deterministic for the same vectors in the same order:

1. PCA: centre, SVD, keep up to 32 components (signs fixed so that each
   component's largest loading is positive).
2. Clusters: k-means (k = round(sqrt(n / 2)) clamped to 1..32) with k-means++
   seeding from a fixed random seed, 50 Lloyd iterations at most.
3. 2-D positions: exact t-SNE (perplexity up to 30, 300 iterations, early
   exaggeration 12 for the first 100, PCA start) on at most `LANDMARKS` points
   spread over the clusters; every other point is placed at the
   distance-weighted mean of its five nearest landmarks in PCA space. The result
   is scaled into [-1, 1] on its longer side.

A few thousand images lay out in a few seconds on two CPU cores.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

FEATURE = "builtin-v1"
DIMENSIONS = 164
LANDMARKS = 1000
MAX_CLUSTERS = 32
_SEED = 20261204
_BLOCK_WEIGHTS = (1.0, 0.8, 1.0)


# -- the built-in descriptor ------------------------------------------------


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _orientation_histogram(grey: np.ndarray) -> np.ndarray:
    dy, dx = np.gradient(grey)
    magnitude = np.hypot(dx, dy)
    angle = np.mod(np.arctan2(dy, dx), np.pi)
    bins = np.minimum((angle / np.pi * 9).astype(int), 8)
    half = grey.shape[0] // 2
    cells = []
    for rows in (slice(0, half), slice(half, None)):
        for cols in (slice(0, half), slice(half, None)):
            cells.append(
                np.bincount(
                    bins[rows, cols].ravel(),
                    weights=magnitude[rows, cols].ravel(),
                    minlength=9,
                )
            )
    return np.concatenate(cells)


def describe_image(image: Image.Image) -> np.ndarray:
    """The built-in descriptor of a decoded image (float32, unit length)."""
    image = ImageOps.exif_transpose(image).convert("RGB")
    small = np.asarray(image.resize((64, 64), Image.Resampling.BILINEAR), np.float32)
    quantised = (small // 64).astype(int)
    joint = quantised[..., 0] * 16 + quantised[..., 1] * 4 + quantised[..., 2]
    colour = np.bincount(joint.ravel(), minlength=64).astype(np.float32)
    grey = small @ np.array([0.299, 0.587, 0.114], np.float32)
    tiny = np.asarray(
        Image.fromarray(grey.astype(np.uint8)).resize((8, 8), Image.Resampling.BOX),
        np.float32,
    ).ravel()
    tiny = tiny - tiny.mean()
    blocks = (colour, tiny, _orientation_histogram(grey / 255.0))
    vector = np.concatenate(
        [_unit(b.astype(np.float32)) * w for b, w in zip(blocks, _BLOCK_WEIGHTS)]
    )
    return _unit(vector).astype(np.float32)


def describe(data: bytes) -> np.ndarray:
    """The built-in descriptor of encoded image bytes; raises ValueError when
    the bytes do not decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (128, 128))  # JPEG: decode at a reduced scale
            image.load()
            return describe_image(image)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from None


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1)).astype(np.float32)


# -- layout and clusters ----------------------------------------------------


@dataclass
class Analysis:
    coords: np.ndarray  # (n, 2) float32, within [-1, 1]
    clusters: np.ndarray  # (n,) int32


def pca(vectors: np.ndarray, components: int = 32) -> np.ndarray:
    centred = vectors.astype(np.float64) - vectors.mean(axis=0)
    if len(centred) < 2:
        return np.zeros((len(centred), 1))
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    keep = max(1, min(components, int((singular > 1e-9).sum()) or 1))
    axes = vt[:keep]
    signs = np.sign(axes[np.arange(keep), np.abs(axes).argmax(axis=1)])
    return centred @ (axes * signs[:, None]).T


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0)


def kmeans(points: np.ndarray, k: int, iterations: int = 50) -> np.ndarray:
    """Cluster labels by Lloyd's algorithm from a seeded k-means++ start."""
    n = len(points)
    k = max(1, min(k, n))
    rng = np.random.default_rng(_SEED)
    centres = [points[rng.integers(n)]]
    nearest = _squared_distances(points, centres[0][None])[:, 0]
    for _ in range(1, k):
        total = nearest.sum()
        if total <= 0:
            break
        choice = rng.choice(n, p=nearest / total)
        centres.append(points[choice])
        nearest = np.minimum(
            nearest, _squared_distances(points, points[choice][None])[:, 0]
        )
    centre = np.array(centres)
    labels = np.zeros(n, dtype=np.int32)
    for _ in range(iterations):
        new = _squared_distances(points, centre).argmin(axis=1).astype(np.int32)
        if _ and np.array_equal(new, labels):
            break
        labels = new
        for c in range(len(centre)):
            members = points[labels == c]
            if len(members):
                centre[c] = members.mean(axis=0)
    return labels


def _affinities(points: np.ndarray, perplexity: float) -> np.ndarray:
    """Symmetric t-SNE input affinities, each row's bandwidth found by bisection."""
    n = len(points)
    distances = _squared_distances(points, points)
    target = np.log(perplexity)
    p = np.zeros((n, n))
    for i in range(n):
        row = np.delete(distances[i], i)
        low, high, beta = 0.0, np.inf, 1.0
        for _ in range(50):
            weights = np.exp(-(row - row.min()) * beta)
            total = weights.sum()
            entropy = np.log(total) + beta * ((row - row.min()) * weights).sum() / total
            if abs(entropy - target) < 1e-4:
                break
            if entropy > target:
                low = beta
                beta = beta * 2 if high == np.inf else (beta + high) / 2
            else:
                high = beta
                beta = (beta + low) / 2
        p[i, np.arange(n) != i] = weights / total
    p = (p + p.T) / (2 * n)
    return np.maximum(p, 1e-12)


def tsne(points: np.ndarray, start: np.ndarray, iterations: int = 300) -> np.ndarray:
    """Exact t-SNE in two dimensions from a given start (no randomness)."""
    n = len(points)
    if n < 4:
        return start.copy()
    perplexity = min(30.0, (n - 1) / 3)
    p = _affinities(points, perplexity).astype(np.float32)
    y = (start / (np.std(start[:, 0]) or 1) * 1e-2).astype(np.float32)
    velocity = np.zeros_like(y)
    gains = np.ones_like(y)
    for step in range(iterations):
        exaggeration = 12.0 if step < 100 else 1.0
        momentum = 0.5 if step < 100 else 0.8
        q_num = 1.0 / (1.0 + _squared_distances(y, y))
        np.fill_diagonal(q_num, 0.0)
        q = np.maximum(q_num / q_num.sum(), 1e-12)
        force = (exaggeration * p - q) * q_num
        gradient = 4 * (force.sum(axis=1)[:, None] * y - force @ y)
        same = np.sign(gradient) == np.sign(velocity)
        gains = np.clip(np.where(same, gains * 0.8, gains + 0.2), 0.01, None)
        velocity = momentum * velocity - 200.0 * gains * gradient
        y = y + velocity
        y = y - y.mean(axis=0)
    return y


def _landmarks(clusters: np.ndarray, limit: int) -> np.ndarray:
    """Up to `limit` indices, each cluster represented in proportion to its size."""
    n = len(clusters)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(_SEED)
    chosen = []
    for c in np.unique(clusters):
        members = np.flatnonzero(clusters == c)
        take = max(1, round(len(members) * limit / n))
        chosen.append(
            np.sort(rng.choice(members, size=min(take, len(members)), replace=False))
        )
    return np.sort(np.concatenate(chosen))[:limit]


def _place(
    points: np.ndarray, anchors: np.ndarray, anchor_xy: np.ndarray
) -> np.ndarray:
    """Positions for points from their five nearest anchors, in chunks."""
    out = np.empty((len(points), 2))
    neighbours = min(5, len(anchors))
    for start in range(0, len(points), 4096):
        chunk = points[start : start + 4096]
        d = _squared_distances(chunk, anchors)
        nearest = np.argsort(d, axis=1, kind="stable")[:, :neighbours]
        weights = 1.0 / (np.sqrt(np.take_along_axis(d, nearest, 1)) + 1e-6)
        weights /= weights.sum(axis=1, keepdims=True)
        out[start : start + len(chunk)] = (anchor_xy[nearest] * weights[..., None]).sum(
            1
        )
    return out


def analyse(
    vectors: np.ndarray, on_stage: Callable[[str, float], None] | None = None
) -> Analysis:
    """Clusters and 2-D positions for unit-length feature rows."""
    n = len(vectors)
    if n == 0:
        return Analysis(np.zeros((0, 2), np.float32), np.zeros(0, np.int32))
    reduced = pca(vectors)
    clusters = kmeans(reduced, min(MAX_CLUSTERS, round((n / 2) ** 0.5) or 1))
    if on_stage:
        on_stage("umap", 20.0)
    chosen = _landmarks(clusters, LANDMARKS)
    start = np.zeros((len(chosen), 2))
    start[:, : min(2, reduced.shape[1])] = reduced[chosen, :2]
    layout = tsne(reduced[chosen], start)
    if on_stage:
        on_stage("umap", 80.0)
    coords = np.empty((n, 2))
    coords[chosen] = layout
    rest = np.setdiff1d(np.arange(n), chosen, assume_unique=True)
    if len(rest):
        coords[rest] = _place(reduced[rest], reduced[chosen], layout)
    coords -= (coords.max(axis=0) + coords.min(axis=0)) / 2
    span = float(np.abs(coords).max())
    if span > 0:
        coords /= span
    return Analysis(coords.astype(np.float32), clusters.astype(np.int32))


# -- storage -----------------------------------------------------------------


def save(
    handle: BinaryIO,
    image_ids: list[str],
    vectors: np.ndarray,
    analysis: Analysis,
    failed: np.ndarray,
) -> None:
    """One numpy file per analysis: ids, float16 vectors, positions, clusters and
    which images could not be read."""
    np.savez_compressed(
        handle,
        ids=np.array(image_ids, dtype="U24"),
        vectors=vectors.astype(np.float16),
        coords=analysis.coords,
        clusters=analysis.clusters,
        failed=failed.astype(bool),
    )


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
