"""Command line: ``avatar-server`` (the server) and ``avatar-server engine --port N`` (the engine alone)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from .engine.errors import EngineConfigError
from .errors import ConfigError
from .logs import setup_logging


def _serve(argv: list[str]) -> int:
    from .app import create_app
    from .settings import Settings
    from .store.ownership import DataDirLock

    parser = argparse.ArgumentParser(
        prog="avatar-server",
        description="Real-time avatar session backend. Settings come from the environment "
                    "(see docs/operations.md); without RUNWAYML_API_SECRET it runs its local engine.",
        epilog="commands:\n"
               "  avatar-server [serve] [--host H] [--port P]   the server (the default)\n"
               "  avatar-server engine [--port N] ...          the Runway-compatible engine alone "
               "(see: avatar-server engine --help)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="listen address (default AVATAR_SERVER_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default AVATAR_SERVER_PORT or 8080)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.host:
        env["AVATAR_SERVER_HOST"] = args.host
    if args.port is not None:
        env["AVATAR_SERVER_PORT"] = str(args.port)
    settings = Settings.from_env(env)
    if settings.redis_url is None:
        # one owner per data dir (its embedded Redis): refused here, before anything is touched;
        # the lock itself is taken with the embedded Redis and held until it stops
        DataDirLock.check_free(settings.data_dir)
    setup_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    base = settings.base_url()
    mode = "local engine" if settings.engine_mode else f"Runway at {settings.runway_base_url}"

    def banner(_: str) -> None:
        print(f"avatar-server on {base} (upstream: {mode}); demo: {base}/demo; admin token: "
              f"{settings.data_dir / 'admin-token'} unless AVATAR_SERVER_ADMIN_TOKEN is set", flush=True)

    web.run_app(app, host=settings.host, port=settings.port, access_log=None, print=banner,
                shutdown_timeout=10, keepalive_timeout=settings.idle_timeout)
    return 0


def _engine(argv: list[str]) -> int:
    from pathlib import Path

    from .engine import create_engine_app
    from .engine.config import EngineConfig
    from .engine.store import EngineCatalogStore
    from .settings import Settings, load_or_create_admin_token
    from .store.connection import RedisHandle, open_redis
    from .store.ownership import DataDirLock

    parser = argparse.ArgumentParser(
        prog="avatar-server engine",
        description="The local Runway-compatible engine alone: realtime sessions with a WebRTC media peer, "
                    "avatars, documents, conversations, usage and voices, at the root of this address "
                    "(point Runway's SDKs, or an avatar-server with RUNWAYML_BASE_URL, at http://HOST:PORT). "
                    "Engine behaviour comes from AVATAR_ENGINE_* variables (docs/operations.md).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="listen port (default 8090)")
    parser.add_argument("--api-key", action="append", default=[],
                        help="accepted API key (repeatable; default: the admin token)")
    parser.add_argument("--data-dir", type=Path,
                        help="where the embedded Redis keeps the engine's avatars and documents when "
                             "REDIS_URL is not set (default: <AVATAR_SERVER_DATA_DIR>/engine)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    data_dir: Path = args.data_dir or settings.data_dir / "engine"
    if settings.redis_url is None:
        DataDirLock.check_free(data_dir)  # one owner per data dir, as for the server
    setup_logging(settings.log_level, settings.log_json)
    keys = list(args.api_key) or [load_or_create_admin_token(settings)[0]]
    host = args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"
    redis: list[RedisHandle] = []

    async def redis_ctx(_: web.Application) -> AsyncIterator[None]:
        # REDIS_URL (keys under the engine's own prefix), else an embedded redis-server in data_dir
        redis.append(await open_redis(settings.redis_url, data_dir))
        yield
        await redis[0].close()

    engine = create_engine_app(EngineConfig.from_env(os.environ), api_keys=lambda: keys,
                               public_url=f"http://{host}:{args.port}",
                               catalog_store=lambda: EngineCatalogStore(redis[0].client))
    engine.cleanup_ctx.append(redis_ctx)
    web.run_app(engine, host=args.host, port=args.port, access_log=None,
                print=lambda _: print(f"avatar-server engine on http://{host}:{args.port}", flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["engine"]:
            return _engine(argv[1:])
        if argv[:1] == ["serve"]:
            argv = argv[1:]
        return _serve(argv)
    except (ConfigError, EngineConfigError) as exc:
        print(f"avatar-server: configuration error: {exc}", file=sys.stderr, flush=True)
        return 1
    except (ValueError, OSError) as exc:
        print(f"avatar-server: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
