"""``python -m mae_dbp ...`` (and ``accelerate launch -m mae_dbp ...``) runs the ``mae-dbp`` command."""

import sys

from mae_dbp.cli import main

if __name__ == "__main__":
    sys.exit(main())
