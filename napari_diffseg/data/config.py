"""Options of the synthetic angiography generator and the scene parameters drawn from them.

:class:`SyntheticConfig` is the public knob set. :func:`draw_scene_params` turns it into a
:class:`SceneParams` record: every random or difficulty-dependent number of the scene is
drawn there, in one place, from ``np.random.default_rng`` seeded by the config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .degrade import Degradation, draw_degradation

__all__ = [
    "DEFAULT_CLASSES",
    "MOSXAV_BALLOON",
    "MOSXAV_EMPTY_CATHETER",
    "MOSXAV_SCHEME",
    "SCHEMES",
    "STYLES",
    "SceneParams",
    "SyntheticConfig",
    "draw_scene_params",
]

DEFAULT_CLASSES: dict[int, str] = {0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"}

#: Class schemes of the generator's labels: ``"default"`` (:data:`DEFAULT_CLASSES`) or
#: ``"mosxav"`` (the ids of :data:`napari_diffseg.io.MOSXAV_CLASSES`).
SCHEMES = ("default", "mosxav")
#: Scene styles: ``"wide"`` (default; the range of clinical cines: calibres up to 25 px at
#: 512, dark contrast, filled catheter, sternal wires, acquisition degradations from
#: :mod:`napari_diffseg.data.degrade`) or ``"classic"`` (the generator before the widening,
#: thin low-contrast vessels on a clean background; the same arrays as before for a seed).
STYLES = ("wide", "classic")
#: Default id -> MOSXAV id of the ``"mosxav"`` scheme. The MOSXAV ids mean:
#:
#: * 0 background;
#: * 1 vessel (contrast-filled vessel, as in the default scheme);
#: * 2 contrast catheter: the catheter in frames of the injection phase (from the bolus
#:   start at the catheter until the plateau ends), when its lumen is filled with contrast;
#: * 3 catheter: the same catheter in the other frames (empty lumen, lighter than its wall)
#:   -- the default catheter id 2 maps to 2 or 3 per frame, see
#:   :func:`napari_diffseg.data.physics.catheter_filled`;
#: * 4 balloon: an angioplasty balloon on the guidewire's path (mosxav scheme only, in about
#:   40 % of the sequences, see :data:`MOSXAV_BALLOON`);
#: * 5 others: the guidewire (MOSXAV has no guidewire class; the wire stays labelled rather
#:   than hidden in the background).
#:
#: Where structures overlap: others (guidewire) > balloon > catheter > vessel.
MOSXAV_SCHEME: dict[int, int] = {0: 0, 1: 1, 2: 2, 3: 5}
#: MOSXAV id of the catheter in frames where it is not filled with contrast.
MOSXAV_EMPTY_CATHETER = 3
#: MOSXAV id of the angioplasty balloon (drawn only in the ``"mosxav"`` scheme).
MOSXAV_BALLOON = 4

#: Reference image size: lengths quoted "at 512" scale with ``min(H, W) / REFERENCE_SIZE``.
REFERENCE_SIZE = 512
#: image edges a catheter can enter from
CATHETER_SIDES = ("bottom", "right", "top", "left")
#: Share of the wide style's scenes whose catheter holds diluted contrast (clinical_catheters).
FAINT_CATHETERS = 0.4
#: Detector pixel pitch at the reference size (mm); the field of view is kept constant.
REFERENCE_PIXEL_MM = 0.3


@dataclass
class SyntheticConfig:
    """Options of :func:`napari_diffseg.data.generate_sequence`.

    Attributes
    ----------
    size
        Image size ``H, W`` in pixels (an int means square), 64..1024 recommended.
    frames
        Number of frames ``T`` (>= 1). The contrast bolus always spans the sequence (wash-in,
        plateau, wash-out over the T frames; a single frame shows the plateau), while cardiac
        and respiratory motion run in real time at ``fps``.
    seed
        Seed of every random draw; the same config always gives identical arrays.
    difficulty
        0 (easy) .. 1 (hard): fewer photons, less iodine, more motion, more anatomical
        clutter and thinner distal vessels.
    fps
        Frame rate (s^-1) used for the motion time axis and stored on the sequence.
    guidewire
        Whether a guidewire is present; ``None`` decides at random (about 60 %).
    heart_rate_bpm
        Heart rate; ``None`` draws 60..95 bpm.
    catheter_side
        Image edge the catheter enters from, ``"bottom"``, ``"right"``, ``"top"`` or
        ``"left"``; ``None`` = random: bottom (60 %) or right in the classic style; in the
        wide style 40 % of the scenes enter from the top (25 %, often looping down and back
        up into the ostium, as a Judkins catheter in the aortic root) or the left (15 %).
    catheter_from_any_edge
        False: the wide style's catheters keep the classic draw (bottom or right), as before
        2026-12-06 -- the scenes are then those of that generator, e.g. the bundled model's
        fixed held-out videos (scripts/train_default_model.py).
    thorax_detail
        True: the wide style's lungs also show a network of fine dark strands (interstitial
        and vascular markings, in every frame, never labelled) and 30 % of the scenes show
        clusters of surgical clips (dense short rods along a graft's path, background) --
        what a bundled model labelled vessel on real cines before the contrast arrived
        (docs/real-data.md). False: the background as drawn before 2026-12-07 (the bundled
        model's fixed held-out videos); every other draw is the same for one seed.
    clinical_catheters
        True: the guiding catheters of the clinical cines, which a bundled model labelled
        vessel (docs/real-data.md). In 40 % of the wide style's scenes the catheter is 6..11
        px wide and (default scheme; MOSXAV's is filled or flushed, its classes) its lumen
        holds diluted contrast in every frame (0.3..0.9 of the vessels' peak concentration),
        no darker than the trunk it engages; and half of the catheters that loop in from the
        top make a J (down beside the ostium, then a wide, shallow sweep into it from the
        side) instead of a deep U. False: the catheters as drawn before (filled with
        undiluted contrast during the injection, 6..8.5 px, U loops); every other draw of
        the scene is the same (the guidewire's path may differ where a loop draws the J).
    label_threshold
        Relative iodine concentration (peak = 1) above which a vessel pixel is labelled.
    min_label_contrast
        Minimum centreline darkening after detector blur (attenuation units, about the
        relative intensity drop) for a vessel pixel to be labelled.
    min_label_snr
        The darkening must also exceed this multiple of the quantum-noise std, so that
        labelled vessel is visibly dark at every difficulty.
    min_radius_px
        Floor of the rendered vessel radius, keeping distal vessels visible at small sizes.
    detector_sigma
        Detector blur (Gaussian PSF sigma, pixels); ``None`` draws 0.7..1.2.
    noise
        Apply quantum noise (turn off for noise-free reference images).
    scheme
        Class ids of the labels: ``"default"`` (:data:`DEFAULT_CLASSES`) or ``"mosxav"``
        (MOSXAV ids, see :data:`MOSXAV_SCHEME`). The ``"mosxav"`` scene adds what MOSXAV
        distinguishes: the catheter is filled with undiluted contrast during the injection
        phase only (contrast catheter 2, else catheter 3), and some sequences (about 40 %,
        only with a guidewire) show an angioplasty balloon (4). Its images therefore differ
        from the default scheme's in the catheter lumen and the balloon; the rest of the
        scene (tree, wire, motion, anatomy, bolus) is the same for one seed.
    """

    size: int | tuple[int, int] = 256
    frames: int = 40
    seed: int = 0
    difficulty: float = 0.5
    fps: float = 15.0
    guidewire: bool | None = None
    heart_rate_bpm: float | None = None
    catheter_side: str | None = None
    catheter_from_any_edge: bool = True
    thorax_detail: bool = True
    clinical_catheters: bool = True
    label_threshold: float = 0.12
    min_label_contrast: float = 0.05
    min_label_snr: float = 2.5
    min_radius_px: float = 0.6
    detector_sigma: float | None = None
    noise: bool = True
    scheme: str = "default"
    style: str = "wide"
    degrade: float = 1.0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if not 0.0 <= self.degrade <= 1.0:
            raise ValueError(f"degrade must be within [0, 1], got {self.degrade}")
        h, w = self.shape
        if h < 16 or w < 16:
            raise ValueError(f"size must be at least 16 px, got {self.size!r}")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must be within [0, 1], got {self.difficulty}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.catheter_side not in (None, *CATHETER_SIDES):
            raise ValueError(f"catheter_side must be None or one of {CATHETER_SIDES}, got "
                             f"{self.catheter_side!r}")

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(H, W)``."""
        if isinstance(self.size, (int, np.integer)):
            return int(self.size), int(self.size)
        h, w = self.size
        return int(h), int(w)


@dataclass(frozen=True)
class SceneParams:
    """Every number that defines one synthetic scene (drawn by :func:`draw_scene_params`).

    Lengths are in pixels of the output image, attenuations are line-integral units
    (``I = I0 * exp(-A)``), ``mu_*`` are attenuation coefficients per millimetre.
    """

    shape: tuple[int, int]
    scale: float  # min(H, W) / 512
    pixel_mm: float
    difficulty: float
    # vessel tree
    main_radius: float
    distal_radius: float
    min_radius: float
    n_main_branches: int
    side_branches: tuple[int, int]
    # devices
    catheter_radius: float
    catheter_side: str
    guidewire: bool
    guidewire_radius: float
    mu_catheter_wall: float
    mu_guidewire: float
    # contrast agent and bolus (time in units of the sequence duration)
    mu_iodine: float
    bolus_arrival: float
    bolus_rise: float
    bolus_plateau: float
    bolus_decay: float
    bolus_front_span: float
    label_threshold: float
    min_label_contrast: float
    # motion
    heart_rate_hz: float
    cardiac_phase0: float
    contraction: float
    rotation_rad: float
    nonrigid_px: float
    resp_period_s: float
    resp_phase0: float
    resp_amplitude_px: float
    resp_angle_rad: float
    # anatomy
    clutter: float
    # image formation
    photons: float
    detector_sigma: float
    display_level: float
    display_gain: float
    vignette: float
    noise: bool
    # wide style (classic: the neutral values, see draw_scene_params)
    style: str = "classic"
    tortuosity: float = 1.0  # scales the meanders of every branch
    distal_kinks: float = 0.0  # corkscrew curvature of distal segments (1/px at the tip)
    catheter_residual: float = 0.0  # contrast left in the catheter outside the injection
    catheter_iodine: float = 1.0  # catheter lumen concentration / vessel's (undiluted)
    sternal_wires: int = 0  # sternotomy wire loops in the background
    thorax_detail: bool = False  # lung strands and surgical clips (SyntheticConfig)
    clinical_catheters: bool = False  # J-shaped loops as well (SyntheticConfig)
    degradation: Degradation | None = None  # acquisition degradations applied last


def draw_scene_params(config: SyntheticConfig, rng: np.random.Generator) -> SceneParams:
    """Draw the scene parameters of ``config`` (difficulty scaling lives here).

    Difficulty only scales amplitudes (never the number of draws), so one seed gives the same
    scene layout at every difficulty.
    """
    h, w = config.shape
    d = float(config.difficulty)
    scale = min(h, w) / REFERENCE_SIZE
    u = rng.uniform
    # draw every optional value unconditionally so that fixing one option (e.g. guidewire)
    # does not reshuffle the rest of the scene
    guidewire_draw, side_draw, hr_draw, sigma_draw = u(), u(), u(60.0, 95.0), u(0.7, 1.2)
    guidewire = bool(guidewire_draw < 0.6) if config.guidewire is None else bool(config.guidewire)
    side = config.catheter_side or ("bottom" if side_draw < 0.6 else "right")
    hr = config.heart_rate_bpm if config.heart_rate_bpm is not None else hr_draw
    sigma = config.detector_sigma if config.detector_sigma is not None else sigma_draw
    classic = SceneParams(
        shape=(h, w),
        scale=scale,
        pixel_mm=REFERENCE_PIXEL_MM / scale,
        difficulty=d,
        main_radius=u(5.0, 6.5) * scale * (1.0 - 0.15 * d),
        distal_radius=u(1.0, 1.4) * scale * (1.0 - 0.35 * d),
        min_radius=config.min_radius_px,
        n_main_branches=int(rng.choice([2, 2, 3])),
        side_branches=(3, 6),
        catheter_radius=max(u(2.8, 3.3) * scale, 1.0),
        catheter_side=side,
        guidewire=guidewire,
        guidewire_radius=max(0.6 * scale, 0.5),
        mu_catheter_wall=u(0.22, 0.3),
        mu_guidewire=u(2.2, 2.8),
        mu_iodine=u(0.45, 0.55) * (1.0 - 0.4 * d),
        bolus_arrival=u(0.03, 0.12),
        bolus_rise=u(0.06, 0.1),
        bolus_plateau=u(0.28, 0.4),
        bolus_decay=u(0.08, 0.13),
        bolus_front_span=u(0.08, 0.16),
        label_threshold=config.label_threshold,
        min_label_contrast=config.min_label_contrast,
        heart_rate_hz=hr / 60.0,
        cardiac_phase0=u(0.0, 1.0),
        contraction=u(0.8, 1.2) * (0.015 + 0.04 * d),
        rotation_rad=np.deg2rad(u(-1.0, 1.0) * (0.5 + 2.5 * d)),
        nonrigid_px=u(0.5, 1.0) * (1.0 + 4.0 * d) * scale,
        resp_period_s=u(3.5, 5.5),
        resp_phase0=u(0.0, 2.0 * np.pi),
        resp_amplitude_px=u(0.5, 1.0) * (0.004 + 0.02 * d) * min(h, w),
        resp_angle_rad=np.deg2rad(u(-25.0, 25.0)),
        clutter=u(0.85, 1.15) * (0.6 + 0.8 * d),
        photons=float(np.exp(np.interp(d, [0.0, 1.0], [np.log(400.0), np.log(40.0)]))),
        detector_sigma=float(sigma),
        display_level=u(135.0, 165.0),
        display_gain=u(105.0, 135.0),
        vignette=u(0.15, 0.3),
        noise=config.noise,
    )
    if config.style == "classic":
        return classic
    return _widen(classic, config, rng)


def _widen(classic: SceneParams, config: SyntheticConfig, rng: np.random.Generator,
           ) -> SceneParams:
    """The ``"wide"`` scene: the classic draws replaced by the ranges of clinical cines.

    Draws after every classic value (so the classic style keeps its arrays) and always the
    same number of values. Ranges at 512 px (0.3 mm pixels): proximal lumen diameter 10..25
    px tapering to about 2 px, iodine from faint to very dark, 6..8.5 px catheter filled
    with undiluted contrast (1.3..2 times the vessels' iodine, at least 0.3..0.5 / mm),
    entering from the top or left edge in 40 % of the scenes (else as in the classic style),
    tortuous distal segments, 4..8 side branches per main branch, sternal wires in 30 % of
    the scenes, and the acquisition degradations of
    :func:`~napari_diffseg.data.degrade.draw_degradation`.
    """
    u = rng.uniform
    d, scale = classic.difficulty, classic.scale
    logu = lambda lo, hi: float(np.exp(u(np.log(lo), np.log(hi))))  # noqa: E731
    main_diameter = logu(10.0, 25.0)
    distal_diameter = u(1.8, 2.6)
    mu_iodine = logu(0.08, 0.35)
    catheter_diameter = u(6.0, 8.5)
    tortuosity, kinks = u(0.8, 1.8), logu(0.03, 0.25)
    residual = u(0.2, 1.0)
    undiluted, pure = u(1.3, 2.0), u(0.3, 0.5)  # pure contrast: at least 0.3..0.5 / mm
    wires_draw, wires = u(), int(rng.integers(2, 6))
    clutter = u(0.5, 1.3)
    photons = logu(200.0, 3000.0)
    level, gain, vignette = u(110.0, 155.0), u(90.0, 170.0), u(0.0, 0.3)
    degradation = draw_degradation(rng, classic.shape, config.degrade)
    # harder scenes are also noisier after the detector; noise=False keeps frames noise-free
    noise = (0.5 + d) if config.noise else 0.0
    degradation = dataclasses.replace(degradation, quantum=degradation.quantum * noise,
                                      electronic=degradation.electronic * noise)
    replace = {
        "main_radius": 0.5 * main_diameter * scale,
        "distal_radius": 0.5 * distal_diameter * scale * (1.0 - 0.2 * d),
        "side_branches": (4, 8),
        "catheter_radius": max(0.5 * catheter_diameter * scale, 1.0),
        "mu_iodine": mu_iodine * (1.0 - 0.35 * d),
        "clutter": clutter * (0.6 + 0.8 * d),
        "photons": photons * float(np.exp(-1.5 * d)),
        "display_level": level,
        "display_gain": gain,
        "vignette": vignette,
        "style": "wide",
        "tortuosity": tortuosity,
        "distal_kinks": kinks,
        "catheter_residual": residual,
        "catheter_iodine": max(undiluted, pure / (mu_iodine * (1.0 - 0.35 * d))),
        "sternal_wires": wires if wires_draw < 0.3 else 0,
        "thorax_detail": bool(config.thorax_detail),
        "clinical_catheters": bool(config.clinical_catheters),
        "degradation": degradation if config.degrade > 0 else None,
    }
    # drawn last, so that the scenes whose catheter keeps its classic side are unchanged
    side_draw = u()
    if config.catheter_side is None and config.catheter_from_any_edge and side_draw < 0.4:
        replace["catheter_side"] = "top" if side_draw < 0.25 else "left"
    # drawn after that, so that clinical_catheters=False gives the scenes of before
    faint_draw, dilution, faint_diameter = u(), u(0.3, 0.9), u(6.0, 11.0)
    if config.clinical_catheters and faint_draw < FAINT_CATHETERS:
        replace["catheter_radius"] = max(0.5 * faint_diameter * scale, 1.0)
        if config.scheme == "default":  # MOSXAV's catheter is filled or flushed (its classes)
            replace["catheter_iodine"] = dilution
            replace["catheter_residual"] = 1.0  # the same lumen in every frame
    return dataclasses.replace(classic, **replace)
