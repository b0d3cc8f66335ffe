"""Public API of the synthetic X-ray coronary angiography generator.

:func:`generate_sequence` draws a scene (vessel tree, catheter, optional guidewire,
anatomy, bolus timing, motion) from ``SyntheticConfig.seed`` and renders every frame from
the moved geometry, so images and labels are consistent by construction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .anatomy import Anatomy, build_anatomy
from .config import (
    DEFAULT_CLASSES,
    MOSXAV_BALLOON,
    MOSXAV_EMPTY_CATHETER,
    MOSXAV_SCHEME,
    SceneParams,
    SyntheticConfig,
    draw_scene_params,
)
from .degrade import HIDDEN, degrade, shutter_visibility
from .geometry import (
    Polyline,
    VesselTree,
    make_balloon,
    make_catheter,
    make_guidewire,
    make_vessel_tree,
)
from .motion import SPINE_RESPIRATION, MotionModel
from .physics import (
    DisplayMap,
    bolus_concentration,
    catheter_filled,
    detect,
    label_contrast_floor,
    tube_darkening,
    vignette,
)
from .render import chord, rasterise_tube

__all__ = ["SyntheticSequence", "generate_sequence", "to_mosxav_ids"]

logger = logging.getLogger(__name__)

#: Inner/outer radius ratio of the catheter (lumen that fills with contrast).
CATHETER_LUMEN = 0.7
VESSEL, CATHETER, GUIDEWIRE = 1, 2, 3
#: Generator-internal id of the balloon (mosxav scheme only; never in default labels).
BALLOON = 4
#: Probability of a balloon in a ``"mosxav"`` sequence that has a guidewire (about 40 % of
#: all sequences, since about 60 % have a wire).
BALLOON_PROBABILITY = 2.0 / 3.0


@dataclass
class SyntheticSequence:
    """A rendered sequence.

    ``frames`` (T, H, W) uint8 gray images with dark vessels; ``labels`` (T, H, W) uint8
    class ids of ``classes``; ``fps`` frame rate; ``name`` sequence name.
    """

    frames: np.ndarray
    labels: np.ndarray
    classes: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_CLASSES))
    fps: float = 15.0
    name: str = "seq000"


@dataclass
class _Scene:
    """Everything drawn once per sequence."""

    params: SceneParams
    tree: VesselTree
    catheter: Polyline
    catheter_motion: np.ndarray  # (Nc,) cardiac weight along the catheter
    guidewire: Polyline | None
    motion: MotionModel
    anatomy: Anatomy
    tree_points: np.ndarray  # (N, 2) all tree points
    tree_dist: np.ndarray  # (N,) path length / longest path
    tree_radius: np.ndarray  # (N,)
    branch_slices: list[slice]
    contrast_floor: float  # smallest labelled centreline darkening
    mosxav: bool = False  # MOSXAV scene: on/off catheter filling and optional balloon
    balloon: Polyline | None = None
    balloon_onset: float = 0.0  # sequence fraction from which the balloon is there
    balloon_mu: float = 0.0  # attenuation per mm of the balloon's diluted contrast


def _draw_balloon(rng: np.random.Generator, params: SceneParams,
                  wire: Polyline | None) -> tuple[Polyline | None, float, float]:
    """Balloon, onset (sequence fraction) and attenuation per mm from the balloon's own stream.

    Present with :data:`BALLOON_PROBABILITY` when there is a guidewire to ride on; inflated
    in every frame (half the time) or from a frame within 15..60 % of the sequence on. It is
    filled with contrast diluted about 1:2..1:3 in saline (moderately dark).
    """
    present, all_frames, onset = rng.uniform(), rng.uniform(), rng.uniform(0.15, 0.6)
    mu = rng.uniform(0.22, 0.32) * params.mu_iodine
    balloon = make_balloon(rng, params, wire) if wire is not None else None
    if wire is None or present >= BALLOON_PROBABILITY:
        balloon = None
    return balloon, (0.0 if all_frames < 0.5 else onset), mu


def _streams(seed: int) -> tuple[list[np.random.Generator], np.random.Generator,
                                  np.random.Generator]:
    """The random streams of a sequence: the six of :func:`_draw_scene` (parameters first),
    the quantum noise's and the acquisition degradations'. 8 are spawned: the first 6 are
    those of 6 spawns, so adding the balloon's (7th) and the degradations' (8th) changed
    nothing."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(8)]
    return streams[:5] + streams[6:7], streams[5], streams[7]


def _draw_scene(config: SyntheticConfig, streams: list[np.random.Generator]) -> _Scene:
    """Draw the scene; each part has its own random stream so parts vary independently (the
    balloon's stream, the sixth, is used only in the ``"mosxav"`` scheme)."""
    rng_params, rng_tree, rng_devices, rng_motion, rng_anatomy, rng_balloon = streams
    params = draw_scene_params(config, rng_params)
    tree = make_vessel_tree(rng_tree, params)
    catheter = make_catheter(rng_devices, params, tree)
    guidewire = make_guidewire(rng_devices, params, tree) if params.guidewire else None
    points = tree.all_points()
    motion = MotionModel.draw(rng_motion, params, points)
    pad = int(np.ceil(2.0 * params.resp_amplitude_px)) + 3
    anatomy = build_anatomy(rng_anatomy, params, motion.centre, pad)
    bounds = np.cumsum([0] + [len(b.points) for b in tree.branches])
    s = np.linspace(0.0, 1.0, len(catheter.points))
    ramp = np.clip((s - 0.5) / 0.45, 0.0, 1.0)
    mosxav = config.scheme == "mosxav"
    balloon, onset, mu_balloon = (_draw_balloon(rng_balloon, params, guidewire) if mosxav
                                  else (None, 0.0, 0.0))
    return _Scene(
        params=params, tree=tree, catheter=catheter,
        catheter_motion=ramp * ramp * (3.0 - 2.0 * ramp),
        guidewire=guidewire, motion=motion, anatomy=anatomy, tree_points=points,
        tree_dist=np.concatenate([b.dist for b in tree.branches]) / max(tree.max_dist, 1.0),
        tree_radius=np.concatenate([b.radius for b in tree.branches]),
        branch_slices=[slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
        contrast_floor=label_contrast_floor(params, config.min_label_snr),
        mosxav=mosxav, balloon=balloon, balloon_onset=onset, balloon_mu=mu_balloon,
    )


def _paint(labels: np.ndarray, hits, value: int) -> None:
    """Set the labelled pixels of ``hits`` to ``value`` (overriding earlier classes)."""
    view = labels[hits.window]
    view[hits.mask] = np.where(hits.label, np.uint8(value), view[hits.mask])


def _render_frame(scene: _Scene, t: float, u: float) -> tuple[np.ndarray, np.ndarray]:
    """Line integrals (H, W) float32 and labels (H, W) uint8 at time t (s), u (fraction)."""
    p = scene.params
    shape = p.shape
    resp = scene.motion.respiration(t)
    atten = scene.anatomy.attenuation(resp, SPINE_RESPIRATION * resp)
    labels = np.zeros(shape, np.uint8)

    # contrast-filled vessel tree
    conc = bolus_concentration(scene.tree_dist, u, p)
    dark = tube_darkening(scene.tree_radius, p.mu_iodine * p.pixel_mm * conc, p.detector_sigma)
    visible = (conc >= p.label_threshold) & (dark >= scene.contrast_floor)
    iodine = np.zeros(shape, np.float32)
    vessel = np.zeros(shape, bool)
    moved = scene.motion.warp(scene.tree_points, t)
    if conc.max() > 1e-3 or visible.any():
        for sl in scene.branch_slices:
            hits = rasterise_tube(moved[sl], scene.tree_radius[sl], shape)
            if hits is None:
                continue
            hits.scatter(iodine, conc[sl][hits.index] * hits.chord)
            hits.scatter(vessel, hits.label & visible[sl][hits.index])
    atten += (p.mu_iodine * p.pixel_mm) * iodine
    labels[vessel] = VESSEL

    # catheter: radio-opaque wall, lumen filled with contrast during the injection
    cath = scene.catheter
    hits = rasterise_tube(scene.motion.warp(cath.points, t, scene.catheter_motion),
                          cath.radius, shape)
    if hits is not None:
        lumen = chord(hits.dist, CATHETER_LUMEN * hits.radius)
        if scene.mosxav:  # undiluted contrast while injecting, flushed otherwise
            c_cath = 1.0 if catheter_filled(u, p) else 0.0
        else:  # the wide style's catheter keeps some contrast between injections
            c_cath = float(np.clip(bolus_concentration(np.array([-0.06]), u, p)[0], 0.0, 1.0))
            c_cath = max(c_cath, p.catheter_residual)
        hits.scatter(atten, p.pixel_mm * (p.mu_catheter_wall * (hits.chord - lumen)
                                          + (0.04 + p.mu_iodine * p.catheter_iodine * c_cath)
                                          * lumen), "add")
        hits.scatter(labels, np.where(hits.label, CATHETER, 0).astype(np.uint8))

    # angioplasty balloon inflated with diluted contrast (mosxav scheme only)
    balloon = scene.balloon
    if balloon is not None and u >= scene.balloon_onset:
        hits = rasterise_tube(scene.motion.warp(balloon.points, t), balloon.radius, shape)
        if hits is not None:
            hits.scatter(atten, p.pixel_mm * scene.balloon_mu * hits.chord, "add")
            _paint(labels, hits, BALLOON)

    # guidewire (on top of everything: the highest id of the default scheme)
    wire = scene.guidewire
    if wire is not None:
        hits = rasterise_tube(scene.motion.warp(wire.points, t), wire.radius, shape)
        if hits is not None:
            weight = wire.weight[hits.index] if wire.weight is not None else 1.0
            hits.scatter(atten, p.pixel_mm * p.mu_guidewire * weight * hits.chord, "add")
            _paint(labels, hits, GUIDEWIRE)
    return atten, labels


def generate_sequence(config: SyntheticConfig, name: str = "seq000") -> SyntheticSequence:
    """Render a synthetic coronary angiography sequence with exact pixel labels.

    Returns frames (T, H, W) uint8 (vessels dark on a brighter background) and labels
    (T, H, W) uint8 with the ids of :data:`DEFAULT_CLASSES` (guidewire > catheter > vessel >
    background where structures overlap). Vessel pixels are labelled only where the
    contrast bolus makes them visible. Deterministic for a given config.

    With ``config.scheme == "mosxav"`` the labels are MOSXAV ids (see
    :data:`~napari_diffseg.data.config.MOSXAV_SCHEME`): the catheter is 2 (contrast catheter)
    in injection-phase frames and 3 (catheter) otherwise, an optional balloon is 4 and the
    guidewire 5 (others > balloon > catheter > vessel).
    """
    start = time.perf_counter()
    scene_streams, rng, acquisition = _streams(config.seed)  # rng: the quantum noise
    scene = _draw_scene(config, scene_streams)
    p = scene.params
    h, w = p.shape
    n = int(config.frames)
    frames = np.empty((n, h, w), np.uint8)
    labels = np.empty((n, h, w), np.uint8)
    shading = vignette(p.shape, p.vignette)
    background = scene.anatomy.attenuation(np.zeros(2), np.zeros(2))
    reference = float(np.median(background))
    display = DisplayMap.from_background(background - reference - np.log(shading), p)
    for i in range(n):
        t = i / config.fps
        u = (i + 0.5) / n
        atten, labels[i] = _render_frame(scene, t, u)
        frames[i] = display(detect(atten, p, shading, reference, rng))
    if p.degradation is not None:
        frames = degrade(frames, acquisition, params=p.degradation)
        labels[:, shutter_visibility(p.degradation) >= HIDDEN] = 0  # under an opaque border
    logger.debug("generated %s (%d x %d x %d) in %.2f s", name, n, h, w,
                 time.perf_counter() - start)
    classes = dict(DEFAULT_CLASSES)
    if config.scheme == "mosxav":
        filled = np.array([catheter_filled((i + 0.5) / n, p) for i in range(n)], bool)
        labels, classes = to_mosxav_ids(labels, filled)
    return SyntheticSequence(frames=frames, labels=labels, classes=classes,
                             fps=float(config.fps), name=name)


def to_mosxav_ids(labels: np.ndarray, catheter_filled: np.ndarray | None = None,
                  ) -> tuple[np.ndarray, dict[int, str]]:
    """Map generator labels ``(T, H, W)`` to MOSXAV ids; also returns MOSXAV's classes.

    Default ids map by :data:`MOSXAV_SCHEME` and the internal balloon id 4 stays 4.
    ``catheter_filled`` (T,) bool says per frame whether the catheter is filled with
    contrast (2, contrast catheter) or not (3, catheter); None means filled in every frame.
    """
    from napari_diffseg.io.mosxav import MOSXAV_CLASSES

    lut = np.zeros(256, np.uint8)
    lut[list(MOSXAV_SCHEME)] = list(MOSXAV_SCHEME.values())
    lut[BALLOON] = MOSXAV_BALLOON
    out = lut[labels]
    if catheter_filled is not None:
        empty = ~np.asarray(catheter_filled, bool)
        out[empty] = np.where(labels[empty] == CATHETER, np.uint8(MOSXAV_EMPTY_CATHETER),
                              out[empty])
    return out, dict(MOSXAV_CLASSES)
