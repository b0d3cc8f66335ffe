"""The diffusion model, torch only: denoiser network, noise schedule and DDIM sampler, losses.

The network knows nothing of the schedule, and the schedule nothing of the network: the
sampler loop in :mod:`napari_diffseg.model.sampling` combines them in a few lines.
"""

from .network import (
    DiffSegNet,
    ModelConfig,
    add_global_context,
    expand_context,
    keep_label_blocks,
)
from .sampling import sample_probabilities
from .schedule import DDIMSampler, NoiseSchedule

__all__ = [
    "DDIMSampler",
    "DiffSegNet",
    "ModelConfig",
    "NoiseSchedule",
    "add_global_context",
    "expand_context",
    "keep_label_blocks",
    "sample_probabilities",
]
