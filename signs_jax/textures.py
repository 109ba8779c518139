"""Procedural backgrounds (noise, stripes, gradients, clutter, wood, fabric), seeded, numpy only.

They stand in for what is behind a hand in other people's photos: walls, desks, clothes, rooms.
Nothing is downloaded; every texture is a function of a numpy Generator.
"""

from collections.abc import Callable

import numpy as np

# Base colours real backgrounds often have (0-255 RGB): white and grey walls, beige, wood, dark cloth,
# blue and green paint, a red sofa. Each texture picks its colours near these.
PALETTE = np.array(
    [
        (235, 235, 230),
        (150, 150, 150),
        (60, 60, 65),
        (215, 195, 160),
        (150, 100, 60),
        (95, 60, 35),
        (40, 50, 90),
        (90, 130, 180),
        (70, 110, 70),
        (160, 45, 40),
        (200, 200, 120),
        (25, 25, 25),
    ],
    np.float32,
)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return np.clip(PALETTE[rng.integers(len(PALETTE))] + rng.normal(0, 15, 3), 0, 255)


def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]."""
    h, w = size
    y, x = np.meshgrid((np.arange(h) + 0.5) / h * 2 - 1, (np.arange(w) + 0.5) / w * 2 - 1, indexing="ij")
    return y.astype(np.float32), x.astype(np.float32)


def value_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: random values on a `cells` x `cells` lattice, bicubically interpolated."""
    from PIL import Image

    lattice = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(lattice).resize(size[::-1], Image.BICUBIC)).clip(0, 1)


def fractal_noise(rng: np.random.Generator, size: tuple[int, int], octaves: int = 4) -> np.ndarray:
    """Value noise summed over octaves (each twice as fine, half as strong), in [0, 1]."""
    total = sum(value_noise(rng, size, 2 ** (k + 1)) * 0.5**k for k in range(octaves))
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def _two_colours(rng, t: np.ndarray) -> np.ndarray:
    a, b = _colour(rng), _colour(rng)
    return a + (b - a) * t[..., None]


def noise(rng, size):
    return _two_colours(rng, fractal_noise(rng, size))


def gradient(rng, size):
    y, x = _grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x + np.sin(angle) * y) / 2 + 0.5
    return _two_colours(rng, t.clip(0, 1))


def stripes(rng, size):
    y, x = _grid(size)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(0.15, 0.6)  # in units of half the frame
    phase = (np.cos(angle) * x + np.sin(angle) * y) / period + rng.uniform(0, 1)
    soft = rng.uniform(0.05, 0.3)  # printed stripes are sharp, blinds and shadows are soft
    t = np.clip((np.abs((phase % 1.0) - 0.5) - 0.25) / soft + 0.5, 0, 1)
    return _two_colours(rng, t)


def clutter(rng, size):
    """A room or a desk: a base colour, then overlapping rectangles and ellipses of other colours."""
    y, x = _grid(size)
    out = np.broadcast_to(_colour(rng), (*size, 3)).copy()
    for _ in range(int(rng.integers(6, 16))):
        cy, cx = rng.uniform(-1.2, 1.2, 2)
        ry, rx = rng.uniform(0.08, 0.6, 2)
        if rng.random() < 0.5:
            inside = (np.abs(y - cy) < ry) & (np.abs(x - cx) < rx)
        else:
            inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
        out[inside] = _colour(rng)
    return out


def wood(rng, size):
    """Growth rings: bands around a far-away centre, bent by noise, in browns."""
    y, x = _grid(size)
    cy, cx = rng.uniform(-4, 4, 2)
    rings = np.hypot((y - cy) * rng.uniform(0.2, 0.5), x - cx) * rng.uniform(2.5, 5)
    rings += fractal_noise(rng, size, 3) * 1.2
    t = (np.sin(rings * 2 * np.pi) * 0.5 + 0.5) ** 2
    light = np.array([190, 140, 90], np.float32) + rng.normal(0, 15, 3)
    dark = light * rng.uniform(0.45, 0.7)
    return light + (dark - light) * t[..., None]


def fabric(rng, size):
    """A weave: two thread directions at a fine period, with a slow colour variation."""
    y, x = _grid(size)
    period = rng.uniform(0.04, 0.1)
    warp = np.sin(x / period * np.pi) ** 2
    weft = np.sin(y / period * np.pi) ** 2
    t = 0.5 * warp * weft + 0.3 * fractal_noise(rng, size, 3)
    base = _colour(rng)
    return np.clip(base * (0.75 + 0.5 * t[..., None]), 0, 255)


TEXTURES: dict[str, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]] = {
    "noise": noise,
    "gradient": gradient,
    "stripes": stripes,
    "clutter": clutter,
    "wood": wood,
    "fabric": fabric,
}


def random_texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """One texture of a random kind: float32 (H, W, 3) in [0, 255]."""
    kind = list(TEXTURES)[rng.integers(len(TEXTURES))]
    return np.clip(TEXTURES[kind](rng, size), 0, 255).astype(np.float32)
