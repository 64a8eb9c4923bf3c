# Slim image, non-root user. In compose, Redis is its own service (REDIS_URL); without
# REDIS_URL the image falls back to the embedded redis-server it also carries.

# Stage 1: the widget's Runway (LiveKit) transport, web/vendor/dist/runway-avatars.js, bundled
# from npm (@runwayml/avatars) with esbuild. Only this stage needs Node.
FROM node:20-slim AS vendor
WORKDIR /vendor
COPY web/vendor/package.json web/vendor/package-lock.json web/vendor/build.mjs ./
COPY web/vendor/src ./src
RUN npm ci --no-audit --no-fund && npm run build

FROM python:3.11-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server espeak-ng \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 avatar

WORKDIR /app
COPY pyproject.toml README.md ./
COPY avatar_server ./avatar_server
COPY web ./web
COPY --from=vendor /vendor/dist ./web/vendor/dist
RUN pip install --no-cache-dir . \
 && mkdir -p /data && chown avatar /data

USER avatar
ENV AVATAR_SERVER_HOST=0.0.0.0 \
    AVATAR_SERVER_PORT=8080 \
    AVATAR_SERVER_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
CMD ["avatar-server"]
