"""Bundles the browser tests build with npm and esbuild (``web/vendor``, ``tests/e2e/react_sdk``).

``scripts/install.sh --test`` builds them; ``ensure_bundle`` builds one again when it is missing or
older than its sources (``npm ci`` first when ``node_modules`` is missing or older than the lock).
Without npm, or when the build fails, the test FAILS with what to do — never a skip: CI must not pass
a browser test that could not run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "web" / "vendor"
VENDOR_BUNDLE = VENDOR / "dist" / "runway-avatars.js"
REACT_SDK = ROOT / "tests" / "e2e" / "react_sdk"
REACT_SDK_BUNDLE = REACT_SDK / "dist" / "react-sdk-app.js"


def _newest(paths: list[Path]) -> float:
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=0.0)


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"`{' '.join(cmd)}` in {cwd.relative_to(ROOT)} failed: {exc}", pytrace=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        pytest.fail(f"`{' '.join(cmd)}` in {cwd.relative_to(ROOT)} failed ({done.returncode}):\n" + "\n".join(tail),
                    pytrace=False)


def ensure_bundle(folder: Path, bundle: Path) -> Path:
    sources = [folder / "package.json", folder / "package-lock.json", folder / "build.mjs",
               *(p for p in (folder / "src").rglob("*") if p.is_file())]
    if bundle.is_file() and bundle.stat().st_mtime >= _newest(sources):
        return bundle
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail(f"Node.js and npm are required to build {bundle.relative_to(ROOT)} for this browser test "
                    "(apt-get install nodejs npm; then bash scripts/install.sh --test)", pytrace=False)
    installed = folder / "node_modules" / ".package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < (folder / "package-lock.json").stat().st_mtime:
        _run([npm, "ci", "--no-audit", "--no-fund"], folder)
    _run([npm, "run", "build"], folder)
    if not bundle.is_file():
        pytest.fail(f"the build did not write {bundle.relative_to(ROOT)}", pytrace=False)
    os.utime(bundle)  # newer than its sources from now on
    return bundle
