"""``python -m upcycle_se.cli``: the ``upcycle-se`` command."""
import sys

from upcycle_se.cli import main

sys.exit(main())
