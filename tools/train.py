"""Segmentation fine-tuning with mmsegmentation's ``tools/train.py`` arguments::

    python tools/train.py CONFIG [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--resume | --force]
                          [--launcher {none,pytorch,slurm,mpi}]
    bash tools/dist_train.sh CONFIG GPUS [same arguments]       # several processes through torchrun

The same command as ``mae-dbp segment train`` (errors: one ``mae-dbp: error: ...`` line, exit 2).
"""

import sys

from mae_dbp.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", "train", *sys.argv[1:]]))
