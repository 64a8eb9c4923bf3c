"""Checks on an avatar's ``referenceImage`` before anything is sent upstream.

Accepted forms (Runway's): an ``https://`` URL (13-2,048 chars) naming a public host,
a ``runway://`` upload URI (≤ 5,000 chars, passed on as is), or a base64
``data:image/{jpeg,png,webp};base64,...`` URI (≤ 5,242,880 chars) whose decoded bytes
really are an image of the declared type (checked by structure, not by the prefix).

The server never fetches the URL. A URL is refused when it could make whoever fetches
it reach something internal: IP literals in any spelling (``127.0.0.1``, ``[::1]``,
``2130706433``, ``0x7f.1``), ``localhost`` and other special-use names, single-label
names, and names that resolve to any non-public address (loopback, private, link-local,
CGNAT, ULA, multicast, reserved, unspecified, or a v6 form embedding one of those).
Names that do not resolve are refused too.

Every refusal is ``ValidationFailed(field="referenceImage", code=...)`` (422), codes:
``invalid_image_url``, ``image_url_not_allowed``, ``image_host_unresolvable``,
``invalid_data_uri``, ``unsupported_image_type``, ``image_type_mismatch``,
``image_too_large``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Literal
from urllib.parse import urlsplit

from avatar_server.errors import ValidationFailed

ImageKind = Literal["jpeg", "png", "webp"]
Resolver = Callable[[str], Awaitable[list[str]]]

FIELD = "referenceImage"
MIN_LENGTH = 13
URL_MAX = 2_048
RUNWAY_URI_MAX = 5_000
DATA_URI_MAX = 5_242_880
RESOLVE_TIMEOUT = 3.0  # seconds

_MEDIA_TYPES: dict[str, ImageKind] = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp"}
_SPECIAL_SUFFIXES = (
    "localhost",
    "local",
    "localdomain",
    "internal",
    "home.arpa",
    "invalid",
    "test",
    "example",
)
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


def _refuse(message: str, code: str) -> ValidationFailed:
    return ValidationFailed(f"{FIELD}: {message}", field=FIELD, code=code)


async def validate_reference_image(value: str, *, resolver: Resolver | None = None) -> str:
    """Return ``value`` unchanged if it is an acceptable reference image, else raise
    ``ValidationFailed``. ``resolver(host) -> [ip, ...]`` resolves https hosts; the
    default asks the system resolver (``loop.getaddrinfo``) with a short timeout."""
    if not isinstance(value, str):
        raise _refuse("must be a string", "invalid_image_url")
    if len(value) < MIN_LENGTH:
        raise _refuse(f"must be at least {MIN_LENGTH} characters", "invalid_image_url")
    if value.startswith("data:"):
        check_data_uri(value)
        return value
    if value.startswith("runway://"):
        if len(value) > RUNWAY_URI_MAX:
            raise _refuse(f"a runway:// URI must be at most {RUNWAY_URI_MAX} characters", "invalid_image_url")
        if _FORBIDDEN_URL_CHARS.search(value):
            raise _refuse("must not contain spaces or control characters", "invalid_image_url")
        return value
    if not value.startswith("https://"):
        raise _refuse("must be an https:// URL, a runway:// URI or a data:image/... URI", "invalid_image_url")
    host = check_https_url(value)
    addresses = await _resolve(host, resolver or _system_resolver)
    for address in addresses:
        if not is_public_address(address):
            raise _refuse("the URL's host resolves to a non-public address", "image_url_not_allowed")
    return value


# --------------------------------------------------------------------------- https URLs


def check_https_url(value: str) -> str:
    """Syntax and host checks of an https URL (no DNS). Returns the ASCII host name."""
    if len(value) > URL_MAX:
        raise _refuse(f"a URL must be at most {URL_MAX} characters", "invalid_image_url")
    if _FORBIDDEN_URL_CHARS.search(value):
        raise _refuse("must not contain spaces, backslashes or control characters", "invalid_image_url")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _refuse("is not a valid URL", "invalid_image_url") from None
    if parts.scheme != "https":
        raise _refuse("must be an https:// URL", "invalid_image_url")
    if "@" in parts.netloc:
        raise _refuse("must not contain a user name or password", "image_url_not_allowed")
    if parts.netloc.startswith("["):
        raise _refuse("must name a host, not an IP address", "image_url_not_allowed")
    if port == 0:
        raise _refuse("is not a valid URL", "invalid_image_url")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _refuse("must name a host", "invalid_image_url")
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _refuse("has an invalid host name", "invalid_image_url") from None
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]) or _is_ip(host):
        # Browsers and most HTTP clients read "2130706433", "0x7f.1", "127.1" as IPv4.
        raise _refuse("must name a host, not an IP address", "image_url_not_allowed")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _refuse("has an invalid host name", "invalid_image_url")
    if len(labels) < 2 or any(host == s or host.endswith("." + s) for s in _SPECIAL_SUFFIXES):
        raise _refuse("must name a public host", "image_url_not_allowed")
    return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_public_address(address: str) -> bool:
    """True only for a globally routable unicast address. IPv4-mapped, 6to4 and NAT64
    addresses are judged by the IPv4 address they carry; Teredo is not global."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(str(embedded))
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local:
        return False
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return False
    return not (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)


_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


async def _system_resolver(host: str) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def _resolve(host: str, resolver: Resolver) -> list[str]:
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            addresses = await resolver(host)
    except (OSError, TimeoutError, UnicodeError):
        addresses = []
    if not addresses:
        raise _refuse("the URL's host name does not resolve", "image_host_unresolvable")
    return addresses


# --------------------------------------------------------------------------- data URIs


def check_data_uri(value: str) -> ImageKind:
    """Checks of a ``data:`` URI: size, media type, base64, and the decoded content."""
    if len(value) > DATA_URI_MAX:
        raise _refuse(
            f"a data URI must be at most {DATA_URI_MAX} characters (about 3.9 MB of image)", "image_too_large"
        )
    header, comma, payload = value.partition(",")
    if not comma:
        raise _refuse("is not a valid data URI", "invalid_data_uri")
    params = [p.strip().lower() for p in header[len("data:") :].split(";")]
    media_type, extras = params[0], params[1:]
    if not extras or extras[-1] != "base64":
        raise _refuse("a data URI must be base64-encoded (data:image/png;base64,...)", "invalid_data_uri")
    declared = _MEDIA_TYPES.get(media_type)
    if declared is None:
        raise _refuse("the image must be JPEG, PNG or WebP", "unsupported_image_type")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse("the data URI's base64 payload is invalid", "invalid_data_uri") from None
    actual = sniff_image(data)
    if actual is None:
        what = "a GIF" if data[:6] in (b"GIF87a", b"GIF89a") else "not a JPEG, PNG or WebP image"
        raise _refuse(f"the data is {what}; the image must be JPEG, PNG or WebP", "unsupported_image_type")
    if actual != declared:
        raise _refuse(
            f"the data is a {actual.upper()} image but is declared as {media_type}", "image_type_mismatch"
        )
    return actual


def sniff_image(data: bytes) -> ImageKind | None:
    """The image format of ``data`` if its structure is a well-formed JPEG, PNG or WebP
    (signature plus the first structures: PNG chunks with CRCs up to IEND, JPEG segments up
    to the scan and an end marker, a WebP RIFF header with a VP8/VP8L/VP8X chunk)."""
    if _is_png(data):
        return "png"
    if _is_jpeg(data):
        return "jpeg"
    if _is_webp(data):
        return "webp"
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(data: bytes) -> bool:
    if not data.startswith(_PNG_SIGNATURE):
        return False
    pos, first, seen_idat = 8, True, False
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return False
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            return False
        if first:
            if kind != b"IHDR" or length != 13:
                return False
            width, height = struct.unpack(">II", data[pos + 8 : pos + 16])
            if width == 0 or height == 0:
                return False
            first = False
        elif kind == b"IDAT":
            seen_idat = True
        elif kind == b"IEND":
            return seen_idat
        pos = end
    return False


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _is_jpeg(data: bytes) -> bool:
    if not data.startswith(b"\xff\xd8\xff"):
        return False
    pos, seen_frame = 2, False
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            return False
        if marker in _SOF_MARKERS:
            if length < 8:
                return False
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            if width == 0 or height == 0:
                return False
            seen_frame = True
        if marker == 0xDA:  # start of scan: entropy-coded data follows, then EOI
            return seen_frame and data.rfind(b"\xff\xd9") > pos + 2 + length
        pos += 2 + length
    return False


def _is_webp(data: bytes) -> bool:
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return False
    (riff_size,) = struct.unpack("<I", data[4:8])
    if riff_size + 8 > len(data) or riff_size < 22:
        return False
    chunk, (chunk_size,) = data[12:16], struct.unpack("<I", data[16:20])
    if 20 + chunk_size > riff_size + 8:
        return False
    if chunk == b"VP8 ":
        return data[23:26] == b"\x9d\x01\x2a"
    if chunk == b"VP8L":
        return data[20] == 0x2F
    if chunk == b"VP8X":
        return chunk_size == 10
    return False
