"""``python -m qedit.cli`` runs the ``qedit`` command."""

import sys

from qedit.cli import main

sys.exit(main())
