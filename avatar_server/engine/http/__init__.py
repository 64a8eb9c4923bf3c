"""The engine's HTTP face (aiohttp), one module per job; ``app.create_engine_app`` assembles it.

- ``app``: ``create_engine_app`` — wiring of state, media peer, backends, voices and catalog; cleanup.
- ``context``: the application keys (``ENGINE_STATE`` …) and where the engine is reached from outside.
- ``errors``: the one place engine errors become HTTP answers (Runway's ``{"error", "issues"?}``).
- ``auth``: the bearer check (API key) and the ``X-Runway-Version`` header.
- ``faults``: injected faults around each Runway route (``guarded``), and request counting.
- ``bodies``: request bodies: JSON reading and Runway's create-session schema.
- ``sessions``: Runway's ``/v1/realtime_sessions`` (create, get, cancel, consume, connect_backend).
- ``control``: ``/_control/…`` (faults, fail-next, config, sessions, stats) and ``/healthz``.
- ``rtc``: ``POST /v1/rtc/{id}`` (the browser's SDP offer to the media peer).
- ``catalog``, ``conversations``, ``voices``: ``/v1/avatars`` + ``/v1/documents``,
  ``/v1/avatar_conversations`` + ``/v1/avatar_usage``, ``/v1/voices``.

Nothing here is imported by this ``__init__`` (the modules import each other; ``engine.media``
does not import them).
"""
