"""``GET /openapi.json`` and docs/api.md: the whole API, described from the pydantic models.

One table says for every route its credentials, body model, query parameters and answers; a
module that adds routes adds its rows with ``register(...)``. The published document holds the
rows whose route the running app serves, so it never describes a route that is not there;
``tests/api/test_openapi.py`` fails when a served ``/v1`` route has no row. One job per module:

- ``table``: ``Param``, ``Operation``, ``OPERATIONS`` and ``register``;
- ``rows``: the rows of every route (registered when this package is imported);
- ``document``: ``build_spec`` (the OpenAPI 3.1 document), ``served_routes``, ``undocumented``;
- ``serve``: the ``GET /openapi.json`` route (``routes``, added by ``app.create_app``);
- ``markdown``: ``to_markdown``, docs/api.md;
- ``cli``: the command line, the only module that builds an app (``create_app``); nothing in the
  server imports it:

    python -m avatar_server.api.openapi --markdown > docs/api.md    # the docs page
    python -m avatar_server.api.openapi --json                      # the document itself
"""

from __future__ import annotations

from . import rows  # noqa: F401  (fills the table)
from .document import build_spec, served_routes, undocumented
from .markdown import to_markdown
from .serve import routes
from .table import OPERATIONS, Operation, Param, register

__all__ = [
    "OPERATIONS",
    "Operation",
    "Param",
    "build_spec",
    "register",
    "routes",
    "served_routes",
    "to_markdown",
    "undocumented",
]
