"""The text chunks of a PNG (tEXt, zTXt, iTXt), read from its chunk list without decoding a pixel: how a
workflow is found in a shared image, whatever the image's size, with compressed text capped."""

from __future__ import annotations

import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_BYTES = 16 * 1024**2  # a decompressed text chunk; any workflow is far smaller


def png_text_chunks(data: bytes) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG, read from its chunk list without decoding a pixel, so an image
    of any size costs only its bytes; a compressed text decompresses to at most MAX_TEXT_BYTES. ValueError, with
    what is wrong, for a broken or truncated file."""
    texts: dict[str, str] = {}
    at = len(PNG_SIGNATURE)
    while at < len(data):
        if at + 8 > len(data):
            raise ValueError("it ends inside a chunk header")
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if len(body) < length or at + 12 + length > len(data):
            raise ValueError(f"it ends inside its {kind.decode('latin-1')!r} chunk")
        if zlib.crc32(kind + body) != int.from_bytes(data[at + 8 + length : at + 12 + length], "big"):
            raise ValueError(f"its {kind.decode('latin-1')!r} chunk is corrupted (CRC mismatch)")
        if at == len(PNG_SIGNATURE) and kind != b"IHDR":
            raise ValueError("it does not start with an IHDR chunk")
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            key, text = _text_chunk(kind, body)
            texts.setdefault(key, text)
        if kind == b"IEND":
            break
        at += 12 + length
    return texts


def _text_chunk(kind: bytes, body: bytes) -> tuple[str, str]:
    keyword, separator, rest = body.partition(b"\0")
    if not separator or not 1 <= len(keyword) <= 79:
        raise ValueError(f"a {kind.decode()} chunk has no valid keyword")
    key = keyword.decode("latin-1")
    if kind == b"tEXt":
        return key, rest.decode("latin-1")
    if kind == b"zTXt":
        return key, _inflate(rest[1:]).decode("latin-1")
    if len(rest) < 2:
        raise ValueError("an iTXt chunk is too short")
    compressed, _, rest = rest[0], rest[1], rest[2:]
    _language, _, rest = rest.partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    try:
        return key, (_inflate(text) if compressed else text).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the iTXt chunk {key!r} is not UTF-8") from None


def _inflate(compressed: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(compressed, MAX_TEXT_BYTES)
    except zlib.error as error:
        raise ValueError(f"a compressed text chunk is broken ({error})") from None
    if inflater.unconsumed_tail:
        raise ValueError(f"a compressed text chunk holds more than {MAX_TEXT_BYTES // 1024**2} MB of text")
    return text
