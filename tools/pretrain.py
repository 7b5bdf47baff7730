"""MAE pretraining (BP or DBP), the accelerate way::

    accelerate launch tools/pretrain.py --config configs/pretrain/tiny_cpu_dbp.yaml [--out DIR] [KEY=VALUE ...]
    python tools/pretrain.py --config ...          # one process

The same command as ``mae-dbp pretrain`` (arguments, run directories, error messages, exit codes).
"""

import sys

from mae_dbp.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
