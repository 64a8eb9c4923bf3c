"""``python -m avatar_server.api.openapi --markdown > docs/api.md`` (or ``--json``): see ``cli``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
