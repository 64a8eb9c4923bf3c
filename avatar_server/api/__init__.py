"""The HTTP API: the only package that imports aiohttp.web for public routes."""
