"""The command line: the document of a default server, as Markdown (docs/api.md) or JSON.

    python -m avatar_server.api.openapi --markdown > docs/api.md    # the docs page
    python -m avatar_server.api.openapi --json                      # the document itself

The only module of the package that imports ``avatar_server.app`` (to build a default app's
router without starting it); nothing in the server imports this one, so there is no import circle.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from ...app import create_app
from ...settings import Settings
from .document import build_spec, served_routes
from .markdown import to_markdown


def spec_for_default_app() -> dict[str, Any]:
    """The document a default server publishes (built from its router, without starting it)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(admin_token="adm_" + "0" * 32, data_dir=Path(tmp)))
        return build_spec(served_routes(app))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avatar_server.api.openapi")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="docs/api.md")
    group.add_argument("--json", action="store_true", help="the OpenAPI document")
    args = parser.parse_args(argv)
    spec = spec_for_default_app()
    sys.stdout.write(to_markdown(spec) if args.markdown else json.dumps(spec, indent=2) + "\n")
    return 0
