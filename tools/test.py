"""Evaluate a segmentation checkpoint with mmsegmentation's ``tools/test.py`` arguments::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--cfg-options KEY=VALUE ...]
                         [--launcher {none,pytorch,slurm,mpi}]

The same command as ``mae-dbp segment test``: the training run's config dumped beside the
checkpoint is used, so the run's ``--cfg-options`` need not be repeated.
"""

import sys

from mae_dbp.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", "test", *sys.argv[1:]]))
