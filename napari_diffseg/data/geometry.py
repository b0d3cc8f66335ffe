"""Centreline geometry of the synthetic scene: coronary tree, catheter and guidewire.

All coordinates are ``(y, x)`` in pixels of the output image (``H, W``). Every curve is a
polyline sampled every :data:`STEP` pixels with a radius per point.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .config import SceneParams

__all__ = ["STEP", "Branch", "Polyline", "VesselTree", "make_balloon", "make_catheter",
           "make_guidewire", "make_vessel_tree"]

logger = logging.getLogger(__name__)

#: Sampling step of every centreline, in pixels.
STEP = 0.7


@dataclass
class Polyline:
    """A tube centreline: ``points`` (N, 2) as (y, x), ``radius`` (N,), ``weight`` (N,).

    ``weight`` scales the attenuation per point (e.g. the radio-opaque tip of a wire). For a
    device inside the tree (the guidewire), ``vessel_path`` (N, 2) and ``vessel_radius`` (N,)
    are the centreline and radius of the vessel it runs in, point by point.
    """

    points: np.ndarray
    radius: np.ndarray
    weight: np.ndarray | None = None
    vessel_path: np.ndarray | None = None
    vessel_radius: np.ndarray | None = None


@dataclass
class Branch:
    """One vessel segment of the tree.

    ``points`` (N, 2), ``radius`` (N,), ``dist`` (N,) path length from the ostium (px);
    ``parent`` is the index of the parent branch (-1 for the root) and ``parent_index`` the
    point of the parent it springs from.
    """

    points: np.ndarray
    radius: np.ndarray
    dist: np.ndarray
    level: int
    parent: int = -1
    parent_index: int = 0


@dataclass
class VesselTree:
    """A coronary-like tree rooted at ``ostium`` (2,); branch 0 is the main stem."""

    ostium: np.ndarray
    branches: list[Branch] = field(default_factory=list)

    @property
    def max_dist(self) -> float:
        """Largest path length from the ostium (px)."""
        return float(max(b.dist[-1] for b in self.branches))

    def all_points(self) -> np.ndarray:
        """All centreline points, (N, 2)."""
        return np.concatenate([b.points for b in self.branches])

    def path_to(self, branch_index: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Centreline from the ostium to point ``stop`` of a branch: points (N, 2), radius (N,)."""
        chain: list[tuple[int, int]] = []
        b, end = branch_index, stop
        while b >= 0:
            chain.append((b, end))
            br = self.branches[b]
            b, end = br.parent, br.parent_index
        pts, rad = [], []
        for b, end in reversed(chain):
            br = self.branches[b]
            pts.append(br.points[: end + 1])
            rad.append(br.radius[: end + 1])
        return np.concatenate(pts), np.concatenate(rad)


def _direction(theta: np.ndarray | float) -> np.ndarray:
    """Unit (dy, dx) vector(s) of heading ``theta`` (0 = +x, pi/2 = +y i.e. down)."""
    return np.stack([np.sin(theta), np.cos(theta)], axis=-1)


def _smooth_noise(rng: np.random.Generator, n: int, corr: float) -> np.ndarray:
    """Gaussian noise (n,) correlated over ``corr`` samples, of unit variance in expectation
    (normalised analytically so that short series are not blown up)."""
    sigma = max(corr, 1.0)
    pad = int(4 * sigma) + 1
    x = gaussian_filter1d(rng.standard_normal(n + 2 * pad), sigma, mode="wrap")[pad:pad + n]
    return x * np.sqrt(2.0 * np.sqrt(np.pi) * sigma)


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, length: float,
          bend: float, tortuosity: float, size: float,
          kinks: Callable[[np.ndarray], np.ndarray] | None = None,
          ) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random-walk centreline: points (N, 2) and headings (N,).

    ``bend`` is a constant curvature (1/px); ``tortuosity`` scales smoothed curvature noise
    at two scales (gentle meanders and small kinks) relative to the image ``size``.
    ``kinks`` (callable of the arc length in px -> curvature std in 1/px, or None) adds the
    short-wavelength corkscrew of tortuous distal segments (a draw only when given).
    """
    n = max(int(np.ceil(length / STEP)), 3)
    kappa = (bend
             + tortuosity * 2.2 / size * _smooth_noise(rng, n, 0.05 * size / STEP)
             + tortuosity * 1.5 / size * _smooth_noise(rng, n, 0.02 * size / STEP))
    if kinks is not None:
        amp = kinks(STEP * np.arange(n))
        kappa = kappa + amp * _smooth_noise(rng, n, 0.008 * size / STEP)
    theta = heading + np.concatenate([[0.0], np.cumsum(kappa[:-1] * STEP)])
    steps = STEP * _direction(theta[:-1])
    pts = start + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    # small lateral waviness (a few px at 512), faded in from the branch origin
    scale = size / 512.0
    corr = 7.0 * scale / STEP
    wiggle = tortuosity * 1.5 * scale * _smooth_noise(rng, n, corr)
    wiggle *= np.clip(np.arange(n) / (3.0 * corr), 0.0, 1.0)
    normal = _direction(theta + 0.5 * np.pi)
    return pts + normal * wiggle[:, None], theta


def _clip_to_view(points: np.ndarray, shape: tuple[int, int], margin: float) -> int:
    """Number of leading points that stay inside the image grown by ``margin`` px."""
    h, w = shape
    inside = ((points[:, 0] > -margin) & (points[:, 0] < h - 1 + margin)
              & (points[:, 1] > -margin) & (points[:, 1] < w - 1 + margin))
    if inside.all():
        return len(points)
    return int(np.argmin(inside))


def _taper(n: int, r0: float, r1: float, floor: float) -> np.ndarray:
    """Radius taper from r0 to r1 over n points (slow at first, faster distally), floored."""
    s = np.linspace(0.0, 1.0, n)
    return np.maximum(r0 + (r1 - r0) * s**1.8, floor)


def _add_branch(tree: VesselTree, rng: np.random.Generator, params: SceneParams,
                parent: int, index: int, heading: float, length: float, r0: float, r1: float,
                bend: float, tortuosity: float) -> int:
    """Grow one branch from point ``index`` of branch ``parent``; returns its index or -1."""
    size = float(min(params.shape))
    if parent < 0:
        start, d0, level = tree.ostium, 0.0, 0
    else:
        pb = tree.branches[parent]
        start, d0, level = pb.points[index], float(pb.dist[index]), pb.level + 1
    kinks = None
    if params.distal_kinks > 0:  # corkscrew growing with the distance from the ostium
        def kinks(arc: np.ndarray) -> np.ndarray:
            far = np.clip((d0 + arc - 0.25 * size) / (0.45 * size), 0.0, 1.0)
            return params.distal_kinks / params.scale * far**1.5
    pts, _ = _walk(rng, start, heading, length, bend, tortuosity * params.tortuosity, size,
                   kinks)
    n = _clip_to_view(pts, params.shape, 0.04 * size)
    if n < 3:
        return -1
    radius = _taper(len(pts), r0, r1, params.min_radius)[:n]
    branch = Branch(points=pts[:n], radius=radius, dist=d0 + STEP * np.arange(n), level=level,
                    parent=parent, parent_index=index)
    tree.branches.append(branch)
    return len(tree.branches) - 1


def _heading_at(branch: Branch, i: int) -> float:
    """Local heading of a branch at point i."""
    a = branch.points[max(i - 2, 0)]
    b = branch.points[min(i + 2, len(branch.points) - 1)]
    return float(np.arctan2(b[0] - a[0], b[1] - a[1]))


def _grow_side_branches(tree: VesselTree, rng: np.random.Generator, params: SceneParams,
                        parent: int, count: int, length: tuple[float, float],
                        radius_ratio: tuple[float, float], r_end: float) -> list[int]:
    """Grow ``count`` side branches along ``parent`` at well-separated positions."""
    size = float(min(params.shape))
    pb = tree.branches[parent]
    n = len(pb.points)
    if count <= 0 or n < 20:
        return []
    slots = np.linspace(0.12, 0.88, count + 1)
    pos = slots[:-1] + rng.uniform(0.15, 0.85, count) * np.diff(slots)
    side = rng.choice([-1.0, 1.0])
    made = []
    for f in pos:
        i = int(f * (n - 1))
        side = -side if rng.uniform() < 0.75 else side
        heading = _heading_at(pb, i) + side * np.deg2rad(rng.uniform(30.0, 70.0))
        ln = rng.uniform(*length) * size * (1.0 - 0.4 * f)
        r0 = pb.radius[i] * rng.uniform(*radius_ratio)
        bend = -side * rng.uniform(0.5, 3.0) / size
        b = _add_branch(tree, rng, params, parent, i, heading, ln, r0,
                        max(r_end * rng.uniform(0.75, 1.0), params.min_radius), bend,
                        rng.uniform(0.7, 1.3))
        if b >= 0:
            made.append(b)
    return made


def make_vessel_tree(rng: np.random.Generator, params: SceneParams) -> VesselTree:
    """Grow a left-coronary-like tree: a short main stem from an ostium in the upper-left /
    centre part of the image, 2-3 long main branches, side branches and small twigs."""
    h, w = params.shape
    size = float(min(h, w))
    for _attempt in range(20):
        ostium = np.array([rng.uniform(0.12, 0.32) * h, rng.uniform(0.25, 0.55) * w])
        tree = VesselTree(ostium=ostium)
        target = np.array([rng.uniform(0.55, 0.8) * h, rng.uniform(0.45, 0.75) * w])
        to_target = target - ostium
        h0 = float(np.arctan2(to_target[0], to_target[1])) + np.deg2rad(rng.normal(0.0, 15.0))
        r_main = params.main_radius
        stem = _add_branch(tree, rng, params, -1, 0, h0, rng.uniform(0.06, 0.11) * size,
                           r_main, 0.92 * r_main, 0.0, 0.4)
        if stem < 0:
            continue
        sb = tree.branches[stem]
        end = len(sb.points) - 1
        h_end = _heading_at(sb, end)
        spread = np.deg2rad(rng.uniform(28.0, 65.0, 2))
        offsets = [-spread[0], spread[1]]
        if params.n_main_branches == 3:
            offsets.insert(1, np.deg2rad(rng.normal(0.0, 8.0)))
        mains = []
        for j, off in enumerate(offsets):
            is_middle = len(offsets) == 3 and j == 1
            ln = rng.uniform(0.3, 0.5) if is_middle else rng.uniform(0.55, 0.9)
            ratio = rng.uniform(0.6, 0.7) if is_middle else rng.uniform(0.78, 0.9)
            bend = -np.sign(off) * rng.uniform(-0.4, 1.0) / size
            b = _add_branch(tree, rng, params, stem, end, h_end + off, ln * size,
                            sb.radius[end] * ratio, params.distal_radius * rng.uniform(1.0, 1.3),
                            bend, rng.uniform(0.7, 1.2))
            if b >= 0:
                mains.append(b)
        if len(mains) < 2:
            continue
        lo, hi = params.side_branches
        for b in mains:
            sides = _grow_side_branches(tree, rng, params, b, int(rng.integers(lo, hi + 1)),
                                        (0.18, 0.45), (0.5, 0.75), params.distal_radius)
            for s in sides:
                if rng.uniform() < 0.8:
                    _grow_side_branches(tree, rng, params, s, int(rng.integers(1, 4)),
                                        (0.06, 0.18), (0.6, 0.8), 0.8 * params.distal_radius)
        logger.debug("vessel tree: %d branches", len(tree.branches))
        return tree
    raise RuntimeError("could not grow a vessel tree inside the image")


def _bezier(ctrl: np.ndarray, n: int = 2000) -> np.ndarray:
    """Cubic Bezier curve through 4 control points (4, 2) -> (n, 2)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return ((1 - t) ** 3 * ctrl[0] + 3 * (1 - t) ** 2 * t * ctrl[1]
            + 3 * (1 - t) * t ** 2 * ctrl[2] + t ** 3 * ctrl[3])


def _resample(points: np.ndarray, step: float = STEP) -> np.ndarray:
    """Resample a dense polyline (N, 2) at uniform arc-length ``step``."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    q = np.arange(0.0, s[-1], step)
    if s[-1] - q[-1] > 1e-6:
        q = np.append(q, s[-1])
    return np.stack([np.interp(q, s, points[:, 0]), np.interp(q, s, points[:, 1])], axis=1)


def make_catheter(rng: np.random.Generator, params: SceneParams, tree: VesselTree) -> Polyline:
    """Guiding catheter from an image edge (``params.catheter_side``: bottom, right, top or
    left) to the ostium.

    Points run from the entry (index 0, outside the image) to the tip at the ostium, whose
    last segment is aligned with the main stem so the catheter engages it.
    """
    h, w = params.shape
    size = float(min(h, w))
    ostium = tree.ostium
    stem = tree.branches[0]
    tip_dir = _direction(_heading_at(stem, 0))
    margin = params.catheter_radius + 0.04 * size
    loop = None  # top entry: depth of the loop below the ostium, px
    sweep = None  # a J instead: (depth below the ostium, reach to its side, outward bulge), px
    if params.catheter_side == "bottom":
        entry = np.array([h - 1 + margin, rng.uniform(0.45, 0.9) * w])
        inward = np.array([-1.0, rng.uniform(-0.25, 0.1)])
    elif params.catheter_side == "right":
        entry = np.array([rng.uniform(0.45, 0.9) * h, w - 1 + margin])
        inward = np.array([rng.uniform(-0.3, 0.0), -1.0])
    elif params.catheter_side == "top":
        # down the ascending aorta, left of the ostium; in 60 % of the scenes it loops down
        # and comes back up into the ostium (a Judkins-left catheter in the aortic root, as
        # clinical cines show it)
        entry = np.array([-margin, max(ostium[1] - rng.uniform(0.05, 0.3) * w, 0.03 * w)])
        inward = np.array([1.0, rng.uniform(-0.2, 0.2)])
        if rng.uniform() < 0.6:
            loop = rng.uniform(0.3, 0.6) * h
            if params.clinical_catheters:  # half of the loops: a J, as in the clinical cines
                j_draw, depth, reach, bulge = (rng.uniform(), rng.uniform(0.04, 0.2),
                                               rng.uniform(0.1, 0.35), rng.uniform(0.0, 0.12))
                if j_draw < 0.5:
                    sweep = (depth * h, reach * w, bulge * w)
    else:  # left
        entry = np.array([rng.uniform(0.1, 0.65) * h, -margin])
        inward = np.array([rng.uniform(-0.2, 0.5), 1.0])
    if loop is None:
        span = float(np.linalg.norm(ostium - entry))
        ctrl = np.stack([
            entry,
            entry + inward / np.linalg.norm(inward) * span * rng.uniform(0.35, 0.6),
            ostium - tip_dir * size * rng.uniform(0.12, 0.25),
            ostium,
        ])
    elif sweep is None:  # a U: down from the entry, back up into the ostium from below
        down = np.array([1.0, 0.0])
        ctrl = np.stack([entry, entry + down * (loop + ostium[0]),
                         ostium + down * loop * rng.uniform(0.6, 1.0), ostium])
    else:  # a J: down beside the ostium, then a wide shallow sweep into it from the side
        depth, reach, bulge = sweep
        side = 1.0 if entry[1] <= ostium[1] else -1.0  # the entry's side of the ostium
        ctrl = np.stack([
            entry,
            [ostium[0] + 1.5 * depth, np.clip(entry[1] - side * bulge, 0.03 * w, 0.97 * w)],
            [ostium[0] + depth, np.clip(ostium[1] - side * reach, 0.03 * w, 0.97 * w)],
            ostium,
        ])
    pts = _resample(_bezier(ctrl))
    radius = np.full(len(pts), params.catheter_radius)
    # slight narrowing over the last few millimetres (tapered soft tip)
    tip_len = min(len(pts) // 4, int(3.0 / params.pixel_mm / STEP) + 1)
    if tip_len > 1:
        radius[-tip_len:] *= np.linspace(1.0, 0.85, tip_len)
    return Polyline(points=pts, radius=radius)


def make_guidewire(rng: np.random.Generator, params: SceneParams,
                   tree: VesselTree) -> Polyline:
    """Guidewire from the catheter tip (ostium) down one branch of the tree.

    It follows the branch centreline with a smooth lateral offset inside the lumen and has
    a more radio-opaque distal tip (``weight`` 1.8 over its last ~30 mm).
    """
    candidates = [i for i, b in enumerate(tree.branches) if b.level >= 1 and len(b.points) > 20]
    if not candidates:  # tiny images: any branch will do
        candidates = list(range(len(tree.branches)))
    lengths = np.array([tree.branches[i].dist[-1] for i in candidates], dtype=float)
    levels = np.array([tree.branches[i].level for i in candidates], dtype=float)
    prob = lengths * np.where(levels == 1, 3.0, 1.0)
    choice = candidates[int(rng.choice(len(candidates), p=prob / prob.sum()))]
    br = tree.branches[choice]
    stop = int(rng.uniform(0.6, 0.97) * (len(br.points) - 1))
    path, vessel_r = tree.path_to(choice, stop)
    tangent = np.gradient(path, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    corr = 0.04 * min(params.shape) / STEP
    offset = 0.45 * vessel_r * np.tanh(_smooth_noise(rng, len(path), corr))
    offset *= np.clip(np.arange(len(path)) / max(corr, 1.0), 0.0, 1.0)  # leaves the tip centred
    pts = path + normal * offset[:, None]
    n = len(pts)
    weight = np.ones(n)
    tip = min(int(30.0 / params.pixel_mm / STEP), n // 3)
    if tip > 1:
        weight[-tip:] = 1.0 + 0.8 * np.minimum(np.arange(tip) / 8.0, 1.0)
    return Polyline(points=pts, radius=np.full(n, params.guidewire_radius), weight=weight,
                    vessel_path=path, vessel_radius=vessel_r)


def make_balloon(rng: np.random.Generator, params: SceneParams,
                 wire: Polyline) -> Polyline | None:
    """Angioplasty balloon on a proximal/mid part of the guidewire's path, or None when the
    path is too short.

    A sausage-shaped tube (cylinder with rounded shoulders) 25..40 px long at 512, of radius
    1.5..2 times the mean local vessel radius, centred on the vessel centreline (the inflated
    balloon re-centres the wire), between the catheter tip and about 55 % of the wire.
    Draws a fixed number of values from ``rng`` whatever the outcome.
    """
    size = float(min(params.shape))
    length_draw, pos_draw, ratio = rng.uniform(25.0, 40.0), rng.uniform(), rng.uniform(1.5, 2.0)
    path = wire.vessel_path if wire.vessel_path is not None else wire.points
    vessel_r = wire.vessel_radius if wire.vessel_radius is not None else wire.radius
    n = len(path)
    half = max(int(0.5 * length_draw * params.scale / STEP), 3)
    lo = half + int((params.catheter_radius + 0.03 * size) / STEP)  # clear of the catheter tip
    hi = int(0.55 * (n - 1))
    if hi < lo:
        return None
    c = lo + int(pos_draw * (hi - lo))
    sl = slice(max(c - half, 0), min(c + half + 1, n))
    pts = path[sl]
    x = np.linspace(-1.0, 1.0, len(pts))
    big = ratio * float(vessel_r[sl].mean())
    if params.style == "wide":  # sized to the lumen: thick vessels get no 2x balloon
        big = min(big, float(vessel_r[sl].mean()) + 1.5 * params.scale)
    radius = big * np.sqrt(np.maximum(1.0 - np.abs(x) ** 6, 0.0))
    return Polyline(points=pts, radius=np.maximum(radius, 0.15 * big))
