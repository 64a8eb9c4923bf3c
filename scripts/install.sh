#!/usr/bin/env bash
# Installs what avatar_server needs on a fresh Debian/Ubuntu machine (or any machine that
# already has python3 >= 3.11 and redis-server) into ./.venv.
#   bash scripts/install.sh          # to run the server
#   bash scripts/install.sh --test   # also the test tools (Chromium for the browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

pkgs=()
command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
command -v espeak-ng >/dev/null 2>&1 || pkgs+=(espeak-ng)
if [ "$want_test" = 1 ] && ! command -v chromium >/dev/null 2>&1; then pkgs+=(chromium); fi
if [ "${#pkgs[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "installing system packages: ${pkgs[*]}"
    # another apt (unattended upgrades, a second install) may hold the dpkg lock: wait for it, bounded
    wait_lock=(-o DPkg::Lock::Timeout=300)
    $SUDO apt-get "${wait_lock[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${wait_lock[@]}" install -y -qq "${pkgs[@]}" >/dev/null
  else
    echo "please install: ${pkgs[*]} (redis-server is required; espeak-ng gives the avatar a voice)" >&2
    command -v redis-server >/dev/null 2>&1 || exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$want_test" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
  # reference tokenizers for the token-count tests: litellm's wheel carries their vocabularies
  # (read offline); only those files are needed, not litellm's own dependencies
  .venv/bin/python -m pip install -q --no-deps litellm
else
  .venv/bin/python -m pip install -q -e .
fi
# The Runway (LiveKit) transport bundle for the widget is built when Node is present.
# A failed build never fails the install: it says so in one line and the server runs without it.
if [ -f web/vendor/package.json ] && command -v npm >/dev/null 2>&1; then
  npm_get=install
  [ -f web/vendor/package-lock.json ] && npm_get=ci
  if (cd web/vendor && npm "$npm_get" --silent --no-audit --no-fund && npm run --silent build) >/dev/null 2>&1; then
    echo "built web/vendor/dist/runway-avatars.js (Runway transport for the widget)"
  else
    echo "note: the Runway SDK bundle (web/vendor) was not built (npm $npm_get or the build failed);" \
         "the local-engine transport works without it" >&2
  fi
elif [ -f web/vendor/package.json ]; then
  echo "note: npm not found, the Runway SDK bundle (web/vendor) was not built; the local-engine transport works without it" >&2
fi
# --test: the page on Runway's React SDK that tests/e2e/test_react_sdk.py serves (tests/e2e/react_sdk).
# The test builds it itself when it is missing, and fails (never skips) without npm.
if [ "$want_test" = 1 ] && [ -f tests/e2e/react_sdk/package.json ]; then
  if command -v npm >/dev/null 2>&1 \
     && (cd tests/e2e/react_sdk && npm ci --silent --no-audit --no-fund && npm run --silent build) >/dev/null 2>&1; then
    echo "built tests/e2e/react_sdk/dist/react-sdk-app.js (Runway's React SDK, for the browser tests)"
  else
    echo "note: tests/e2e/react_sdk was not built (npm missing or the build failed); test_react_sdk.py will fail" >&2
  fi
fi
echo "installed into .venv"
