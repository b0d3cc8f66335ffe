"""``python -m napari_diffseg …`` and ``torchrun … -m napari_diffseg …``: the command line."""

import sys

from napari_diffseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
