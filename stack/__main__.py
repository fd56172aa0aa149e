"""``python -m stack``: the service on this machine (what ``make run`` runs)."""

import sys

from stack.launcher import main

sys.exit(main())
