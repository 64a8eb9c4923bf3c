"""Reference image checks: unsafe and malformed inputs are refused with a 422 naming
``referenceImage``; real tiny JPEG/PNG/WebP images (encoded here with PyAV) pass."""

from __future__ import annotations

import base64
import struct
import zlib
from fractions import Fraction

import av
import numpy as np
import pytest

from avatar_server.catalog import images as images_module
from avatar_server.catalog.images import (
    DATA_URI_MAX,
    is_public_address,
    sniff_image,
    validate_reference_image,
)
from avatar_server.errors import ValidationFailed


def _encode(codec: str, pix_fmt: str) -> bytes:
    frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 120, np.uint8), format="rgb24").reformat(
        format=pix_fmt
    )
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 16, 16, pix_fmt, Fraction(1, 25)
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    return b"".join(bytes(p) for p in packets)


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return {
        "jpeg": _encode("mjpeg", "yuvj420p"),
        "png": _encode("png", "rgb24"),
        "webp": _encode("libwebp", "yuv420p"),
    }


def _data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def _resolver(*addresses: str):
    async def resolve(host: str) -> list[str]:
        return list(addresses)

    return resolve


PUBLIC = _resolver("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")


async def _refused(value: str, code: str, resolver=PUBLIC) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        await validate_reference_image(value, resolver=resolver)
    err = info.value
    assert err.status == 422
    assert err.field == "referenceImage"
    assert err.code == code, err.message
    assert "referenceImage" in err.message
    return err


# --------------------------------------------------------------------------- sniffing


def test_sniff_real_images(images: dict[str, bytes]) -> None:
    for kind, data in images.items():
        assert sniff_image(data) == kind


def test_sniff_refuses_gif_and_prefixes(images: dict[str, bytes]) -> None:
    gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    assert sniff_image(gif) is None
    assert sniff_image(b"\x89PNG\r\n\x1a\n" + b"not a png at all" * 10) is None
    assert sniff_image(images["png"][:40] + b"\x00" * 200) is None  # valid start, broken body
    assert sniff_image(b"\xff\xd8\xff\xe0" + b"x" * 100) is None
    assert sniff_image(b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40) is None
    assert sniff_image(b"") is None
    # A bad CRC anywhere in the PNG makes it not a PNG.
    broken = bytearray(images["png"])
    broken[-5] ^= 0xFF
    assert sniff_image(bytes(broken)) is None


def test_sniff_png_built_by_hand() -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )
    assert sniff_image(png) == "png"


# --------------------------------------------------------------------------- data URIs


async def test_valid_data_uris(images: dict[str, bytes]) -> None:
    for kind, data in images.items():
        uri = _data_uri(f"image/{kind}", data)
        assert await validate_reference_image(uri) == uri


async def test_data_uri_type_mismatch(images: dict[str, bytes]) -> None:
    await _refused(_data_uri("image/png", images["jpeg"]), "image_type_mismatch")
    await _refused(_data_uri("image/webp", images["png"]), "image_type_mismatch")


async def test_data_uri_gif_refused() -> None:
    gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    err = await _refused(_data_uri("image/png", gif), "unsupported_image_type")
    assert "GIF" in err.message
    await _refused(_data_uri("image/gif", gif), "unsupported_image_type")


async def test_data_uri_png_prefix_on_other_bytes() -> None:
    fake = b"\x89PNG\r\n\x1a\n" + b"<script>alert(1)</script>" * 20
    await _refused(_data_uri("image/png", fake), "unsupported_image_type")


async def test_data_uri_malformed(images: dict[str, bytes]) -> None:
    b64 = base64.b64encode(images["png"]).decode()
    await _refused("data:image/png," + b64, "invalid_data_uri")  # not base64-declared
    await _refused("data:image/png;base64," + b64[:-3] + "!!!", "invalid_data_uri")
    await _refused("data:image/png;base64" + b64, "invalid_data_uri")  # no comma
    await _refused("data:text/html;base64," + b64, "unsupported_image_type")


async def test_data_uri_seven_megabytes_refused(images: dict[str, bytes]) -> None:
    big = images["png"] + b"\x00" * (7 * 1024 * 1024)
    err = await _refused(_data_uri("image/png", big), "image_too_large")
    assert str(DATA_URI_MAX) in err.message


async def test_data_uri_at_the_limit_is_checked_by_content(images: dict[str, bytes]) -> None:
    prefix = "data:image/png;base64,"
    room = (DATA_URI_MAX - len(prefix)) // 4 * 3  # raw bytes that encode to at most the limit
    data = images["png"] + b"\x00" * (room - len(images["png"]))  # trailing bytes after IEND
    uri = _data_uri("image/png", data)
    assert len(uri) <= DATA_URI_MAX
    assert await validate_reference_image(uri) == uri
    # One base64 quantum more is over the limit.
    over = _data_uri("image/png", data + b"\x00\x00\x00")
    assert len(over) > DATA_URI_MAX
    await _refused(over, "image_too_large")


# --------------------------------------------------------------------------- URLs


async def test_public_https_url_accepted() -> None:
    url = "https://images.example.com/avatars/face.png?size=512"
    assert await validate_reference_image(url, resolver=PUBLIC) == url


async def test_runway_uri_accepted_as_is() -> None:
    uri = "runway://upload/abc123def456"
    assert await validate_reference_image(uri, resolver=_resolver()) == uri
    await _refused("runway://" + "a" * 5000, "invalid_image_url")


@pytest.mark.parametrize(
    "url",
    [
        "http://images.example.com/face.png",
        "ftp://images.example.com/face.png",
        "file:///etc/passwd/face.png",
        "gopher://images.example.com/face",
        "HTTPS://images.example.com/face.png",
        "//images.example.com/face.png",
        "https://images.example .com/face.png",
        "https://images.example.com:99999/face.png",
        "https://-bad-.example.com/face.png",
    ],
)
async def test_not_https_or_malformed(url: str) -> None:
    await _refused(url, "invalid_image_url")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/face.png",
        "https://10.0.0.5/face.png",
        "https://93.184.215.14/face.png",  # even a public IP literal: a domain name is required
        "https://[::1]/face.png",
        "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/face.png",
        "https://[::ffff:127.0.0.1]/face.png",
        "https://2130706433/face.png",
        "https://0x7f000001/face.png",
        "https://0x7f.1/face.png",
        "https://017700000001/face.png",
        "https://127.1/face.png",
        "https://localhost/face.png",
        "https://LOCALHOST./face.png",
        "https://api.localhost/face.png",
        "https://printer.local/face.png",
        "https://intranet/face.png",
        "https://user:pass@images.example.com/face.png",
        "https://images.example.com@evil.example.net/face.png",
    ],
)
async def test_unsafe_hosts_refused(url: str) -> None:
    await _refused(url, "image_url_not_allowed")


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "127.0.0.1",
        "169.254.169.254",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1%eth0",
        "fd00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:0a00:0001::1",  # 6to4 around 10.0.0.1
        "64:ff9b::a00:1",  # NAT64 around 10.0.0.1
    ],
)
async def test_names_resolving_to_internal_addresses_refused(address: str) -> None:
    assert not is_public_address(address)
    err = await _refused("https://images.example.com/face.png", "image_url_not_allowed", _resolver(address))
    assert address not in err.message  # the resolved address is not disclosed


async def test_one_internal_address_among_public_ones_is_enough_to_refuse() -> None:
    await _refused(
        "https://images.example.com/face.png",
        "image_url_not_allowed",
        _resolver("93.184.215.14", "10.0.0.7"),
    )


async def test_unresolvable_names_refused() -> None:
    async def nxdomain(host: str) -> list[str]:
        raise OSError("Name or service not known")

    await _refused("https://no-such-host.example.com/a.png", "image_host_unresolvable", nxdomain)
    await _refused("https://empty.example.com/a.png", "image_host_unresolvable", _resolver())


async def test_default_resolver_refuses_unresolvable_name() -> None:
    # ".invalid" is reserved and never resolves, so no network is needed to get an answer;
    # it is refused before resolution as a special-use name.
    await _refused("https://images.invalid/face.png", "image_url_not_allowed", None)


async def test_system_resolver_answers_addresses() -> None:
    # /etc/hosts always has localhost; the default resolver returns plain address strings.
    addresses = await images_module._system_resolver("localhost")
    assert addresses and not any(is_public_address(a) for a in addresses)


async def test_length_limits() -> None:
    await _refused("https://a.b", "invalid_image_url")  # 11 < 13 characters
    long_url = "https://images.example.com/" + "a" * (2048 - 27)
    assert len(long_url) == 2048
    assert await validate_reference_image(long_url, resolver=PUBLIC) == long_url
    await _refused(long_url + "a", "invalid_image_url")


def test_public_addresses() -> None:
    assert is_public_address("93.184.215.14")
    assert is_public_address("2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    assert is_public_address("::ffff:93.184.215.14")
    assert not is_public_address("not an address")
