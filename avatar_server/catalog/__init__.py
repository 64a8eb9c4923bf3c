"""The catalog: avatars and their knowledge documents. Both live upstream (Runway, or the local
engine) and are forwarded there; Redis mirrors what the server needs (``store.catalog``).

``service.CatalogService`` is what the handlers talk to: ``.avatars`` (``avatars.py``) and
``.documents`` (``documents.py``), both built on ``sync.CatalogSync`` (the upstream ↔ Redis sync:
reserve, upstream, reconcile; adoption of what the upstream made without us). ``views`` shapes
the answers with ``models``; ``tokens`` counts a document's tokens and ``images`` checks an
avatar's reference image (neither needs the store).
"""
