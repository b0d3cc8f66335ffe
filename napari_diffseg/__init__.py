"""napari-diffseg: diffusion-model segmentation of X-ray angiography videos in napari."""

__version__ = "0.1.0"
