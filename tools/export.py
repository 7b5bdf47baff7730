"""Fuse R into the weights and export a plain timm ViT (+ mmseg backbone weights)::

    python tools/export.py RUN_DIR_OR_CHECKPOINT --out DIR [--format timm|mmseg|both] [--force]

The same command as ``mae-dbp export``.
"""

import sys

from mae_dbp.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
