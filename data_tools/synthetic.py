"""Synthetic 2-channel 16-bit wire-bonding images with index masks (for tests and demos).

A scene is a die (with bond pads) on a textured substrate, irregular epoxy fillets along the die
edge, and wires fanning out from the die: a round ball bond on a die pad, a curved thin wire (cubic
Bezier) and a wedge bond on a lead finger. Channel 0 is a bright-field view (wire highlights, ball
capillary ring), channel 1 a second modality of the same scene (other material contrast, emphasised
edges, more blur, another illumination). Both get an illumination gradient, shot noise and read
noise and are stored as uint16 DN. Classes: background 0, wire 1, ball 2, wedge 3, epoxy 4.
Everything is vectorised numpy; a 128 px sample takes a few milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mae_dbp.data.io import write_classes, write_image, write_mask
from mae_dbp.run_dir import prepare_output

WIREBOND_CLASSES: tuple[str, ...] = ("background", "wire", "ball", "wedge", "epoxy")
WIREBOND_PALETTE: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (255, 200, 0), (255, 0, 0), (0, 160, 255), (0, 200, 0))

# materials (finer than classes): substrate, die, pad, finger, epoxy, wire, ball, wedge
_SUB, _DIE, _PAD, _FINGER, _EPOXY, _WIRE, _BALL, _WEDGE = range(8)
_CLASS_OF = np.array([0, 0, 0, 0, 4, 1, 2, 3], dtype=np.uint8)
_REFL_0 = np.array([0.22, 0.42, 0.78, 0.70, 0.30, 0.62, 0.80, 0.74], dtype=np.float32)  # bright field
_REFL_1 = np.array([0.30, 0.18, 0.45, 0.40, 0.62, 0.85, 0.88, 0.80], dtype=np.float32)  # 2nd modality


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Band-limited noise (H, W) float32 in about [-1, 1]: a random coarse grid, bilinearly upsampled."""
    def interp(n: int) -> np.ndarray:
        t = np.linspace(0.0, cells, n, dtype=np.float32)
        i0 = np.minimum(t.astype(np.int64), cells - 1)
        frac = t - i0
        m = np.zeros((n, cells + 1), dtype=np.float32)
        m[np.arange(n), i0] = 1.0 - frac
        m[np.arange(n), i0 + 1] = frac
        return m
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    return interp(h) @ grid @ interp(w).T


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (H, W) float32 with edge replication (sigma in px)."""
    if sigma < 0.3:
        return image
    radius = max(1, int(round(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1, dtype=np.float32) / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(image, pad, mode="edge")
        n = image.shape[axis]
        out = np.zeros_like(image)
        for i, weight in enumerate(k):
            out += weight * (padded[i:i + n] if axis == 0 else padded[:, i:i + n])
        image = out
    return image


def _local_grid(center: np.ndarray, radius: float, size: int) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Slices of the square window around ``center`` (y, x) clipped to the image, and its pixel coordinates."""
    y0, x0 = (max(0, int(np.floor(c - radius - 1))) for c in center)
    y1, x1 = (min(size, int(np.ceil(c + radius + 2))) for c in center)
    yy, xx = np.mgrid[y0:max(y0, y1), x0:max(x0, x1)].astype(np.float32)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1)), yy - center[0], xx - center[1]


def _paint_blob(material: np.ndarray, rng: np.random.Generator, center: np.ndarray, radius: float) -> None:
    """Irregular blob: polar radius r(theta) = radius * (1 + sum of random low harmonics)."""
    sy, sx, dy, dx = _local_grid(center, radius * 1.6, material.shape[0])
    theta = np.arctan2(dy, dx)
    r_theta = np.ones_like(theta)
    for k in range(2, 6):
        r_theta += rng.uniform(0.0, 0.25 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    inside = np.hypot(dy, dx) <= radius * np.clip(r_theta, 0.4, 1.6)
    material[sy, sx][inside] = _EPOXY


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, step: float) -> np.ndarray:
    """Points (N, 2) along a cubic Bezier curve, about ``step`` px apart."""
    length = np.linalg.norm(p1 - p0) + np.linalg.norm(p2 - p1) + np.linalg.norm(p3 - p2)
    t = np.linspace(0.0, 1.0, max(2, int(np.ceil(length / step))), dtype=np.float32)[:, None]
    return ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * p1 + 3 * (1 - t) * t * t * p2 + t ** 3 * p3


def _stamp_distance(dist: np.ndarray, points: np.ndarray, radius: float) -> None:
    """dist = min(dist, distance to the nearest of ``points``) for pixels within ``radius + 1``."""
    size = dist.shape[0]
    r = int(np.ceil(radius + 1))
    oy, ox = np.mgrid[-r:r + 1, -r:r + 1]
    base = np.round(points).astype(np.int64)
    py = (base[:, 0:1] + oy.ravel()[None]).ravel()
    px = (base[:, 1:2] + ox.ravel()[None]).ravel()
    d = np.hypot(py - np.repeat(points[:, 0], oy.size), px - np.repeat(points[:, 1], ox.size)).astype(np.float32)
    keep = (d <= radius + 1) & (py >= 0) & (py < size) & (px >= 0) & (px < size)
    np.minimum.at(dist.ravel(), py[keep] * size + px[keep], d[keep])


def _scene(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Material map (H, W) uint8 and a multiplicative shading map (H, W) float32."""
    s = float(size)
    material = np.full((size, size), _SUB, dtype=np.uint8)
    shade = np.ones((size, size), dtype=np.float32)
    half = rng.uniform(0.17, 0.27, 2) * s
    center = s / 2 + rng.uniform(-0.06, 0.06, 2) * s
    y0, x0 = np.floor(center - half).astype(int)
    y1, x1 = np.ceil(center + half).astype(int)
    for _ in range(int(rng.integers(2, 5))):  # epoxy fillets on the die edge, painted before the die
        side = rng.integers(4)
        along = rng.uniform(0.1, 0.9)
        point = {0: (y0, x0 + along * (x1 - x0)), 1: (y1, x0 + along * (x1 - x0)),
                 2: (y0 + along * (y1 - y0), x0), 3: (y0 + along * (y1 - y0), x1)}[int(side)]
        _paint_blob(material, rng, np.array(point, dtype=np.float32), max(2.5, rng.uniform(0.05, 0.11) * s))
    if rng.random() < 0.3:
        _paint_blob(material, rng, rng.uniform(0.1, 0.9, 2).astype(np.float32) * s, max(2.0, rng.uniform(0.03, 0.06) * s))
    material[y0:y1, x0:x1] = _DIE

    r_wire = max(0.7, s / 220) * rng.uniform(0.85, 1.15)
    r_ball = max(1.6, 2.8 * r_wire) * rng.uniform(0.9, 1.1)
    wedge_a, wedge_b = max(2.2, 3.6 * r_wire), max(1.3, 1.9 * r_wire)
    pad_half = max(1.5, 1.2 * r_ball)
    margin = max(pad_half + 1, 0.05 * s)
    dist = np.full((size, size), np.inf, dtype=np.float32)
    bonds = []
    for side in range(4):
        count = int(rng.integers(1, 4))
        for along in (np.arange(count) + 0.5 + rng.uniform(-0.2, 0.2, count)) / count:
            along = 0.15 + 0.7 * along
            inset = pad_half + 1
            normal = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)][side], dtype=np.float32)
            if side < 2:
                pad = np.array([(y0 + inset) if side == 0 else (y1 - 1 - inset), x0 + along * (x1 - x0)], np.float32)
            else:
                pad = np.array([y0 + along * (y1 - y0), (x0 + inset) if side == 2 else (x1 - 1 - inset)], np.float32)
            fan = center + (pad - center) * (1 - np.abs(normal)) * rng.uniform(1.1, 1.5)
            finger = fan * (1 - np.abs(normal)) + (pad + normal * rng.uniform(0.12, 0.2) * s) * np.abs(normal)
            finger = np.clip(finger, margin, s - 1 - margin)
            py0, px0 = np.floor(pad - pad_half).astype(int)
            material[max(py0, 0):int(pad[0] + pad_half) + 1, max(px0, 0):int(pad[1] + pad_half) + 1] = _PAD
            fh = np.where(np.abs(normal) > 0, 2.2 * pad_half + wedge_a, 1.3 * pad_half + wedge_b)
            fy0, fx0 = np.maximum(np.floor(finger - fh).astype(int), 0)
            material[fy0:int(finger[0] + fh[0]) + 1, fx0:int(finger[1] + fh[1]) + 1] = _FINGER
            chord = finger - pad
            perp = np.array([-chord[1], chord[0]], np.float32) / max(1e-6, float(np.linalg.norm(chord)))
            bend = rng.normal(0.0, 0.07, 2) * np.linalg.norm(chord)
            c1, c2 = pad + chord / 3 + perp * bend[0], pad + 2 * chord / 3 + perp * bend[1]
            _stamp_distance(dist, _bezier(pad, c1, c2, finger, step=max(0.4, r_wire / 3)), r_wire)
            bonds.append((pad, finger, finger - c2))

    wire = dist <= r_wire
    material[wire] = _WIRE
    shade[wire] = 0.75 + 0.45 * np.sqrt(np.clip(1 - (dist[wire] / r_wire) ** 2, 0, 1))
    for pad, finger, direction in bonds:
        sy, sx, dy, dx = _local_grid(pad, r_ball, size)
        rho = np.hypot(dy, dx) / r_ball
        inside = rho <= 1
        material[sy, sx][inside] = _BALL
        shade[sy, sx][inside] = (1.05 - 0.3 * np.exp(-((rho - 0.6) / 0.12) ** 2))[inside]
        u = direction / max(1e-6, float(np.linalg.norm(direction)))
        centre = finger + u * wedge_a * 0.4
        sy, sx, dy, dx = _local_grid(centre, wedge_a, size)
        along, across = dy * u[0] + dx * u[1], -dy * u[1] + dx * u[0]
        inside = (along / wedge_a) ** 2 + (across / wedge_b) ** 2 <= 1
        material[sy, sx][inside] = _WEDGE
        shade[sy, sx][inside] = (1.0 + 0.08 * np.cos(along * np.pi / max(0.8, 0.4 * wedge_b)))[inside]
    return material, shade


def _expose(reflectance: np.ndarray, rng: np.random.Generator, blur: float) -> np.ndarray:
    """Optics + sensor: blur, illumination gradient/vignette, shot and read noise -> uint16 DN."""
    size = reflectance.shape[0]
    t = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    gy, gx, vig = rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35), rng.uniform(0.0, 0.8)
    illum = 1.0 + gy * t[:, None] + gx * t[None, :] - vig * (t[:, None] ** 2 + t[None, :] ** 2)
    electrons = _blur(reflectance, blur) * illum * rng.uniform(6000.0, 20000.0)
    electrons = np.maximum(electrons, 0.0)
    electrons += np.sqrt(electrons) * rng.standard_normal(electrons.shape, dtype=np.float32)  # shot noise
    gain = rng.uniform(45000.0, 60000.0) / max(1.0, float(electrons.max()))  # DN per electron
    read = rng.uniform(3.0, 12.0) * rng.standard_normal(electrons.shape, dtype=np.float32)
    dn = rng.uniform(300.0, 1500.0) + gain * electrons + read
    return np.clip(np.round(dn), 0, 65535).astype(np.uint16)


def generate_sample(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic wire-bond sample: image (2, size, size) uint16 DN and mask (size, size) uint8 in 0..4."""
    if size < 32:
        raise ValueError(f"synthetic images need size >= 32 px, got {size}")
    material, shade = _scene(size, rng)
    texture = 0.12 * _smooth_noise(rng, size, size, max(2, size // 32)) + 0.05 * _smooth_noise(rng, size, size, max(4, min(64, size // 6)))
    ref0 = _REFL_0[material] * shade * (1.0 + texture)
    ref1 = _REFL_1[material] * np.sqrt(shade) * (1.0 - 0.6 * texture)
    smooth = _blur(ref0, max(0.8, size / 400))
    gy, gx = np.gradient(smooth)
    ref1 = ref1 + 1.5 * np.hypot(gy, gx) * max(1.0, size / 256)  # second channel emphasises edges
    image = np.stack([_expose(ref0, rng, blur=max(0.5, size / 1000)), _expose(ref1, rng, blur=max(1.0, size / 300))])
    return image, _CLASS_OF[material]


def write_synthetic(out_dir: Path | str, num: int, size: int, seed: int = 0, progress: bool = True,
                    force: bool = False) -> Path:
    """Write ``num`` samples in the industrial layout (images/*.tif, masks/*.png, classes.yaml).

    Sample ``i`` depends only on (seed, i), so a larger ``num`` extends a smaller set.
    """
    from tqdm import tqdm

    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    out = prepare_output(out_dir, ("images", "masks", "classes.yaml"), force=force)
    for i in tqdm(range(num), desc="synthetic", unit="img", disable=not progress):
        image, mask = generate_sample(size, np.random.default_rng([seed, i]))
        write_image(out / "images" / f"synth_{i:05d}.tif", image)
        write_mask(out / "masks" / f"synth_{i:05d}.png", mask)
    write_classes(out, list(WIREBOND_CLASSES), [list(c) for c in WIREBOND_PALETTE], ignore_index=255)
    return out
