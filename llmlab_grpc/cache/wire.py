"""Cache hit replies written as protobuf bytes by hand, from parts serialized once.

Why: a ``Cache.Get`` hit built as messages cost ~35k instructions of the node's ~85k of
Python per call (callgrind): about twenty field writes into the reply's entry, the
``GetResponse`` itself and its serialization. Everything in a hit's entry except its hit
count is fixed for the life of the entry (a put makes a new one), so the manager
serializes it once (``CacheManager.aget_wire``; those bytes count against
``cache_max_bytes``), and a hit wraps it, with its hit count, in a ``GetResponse`` whose
other fields are fixed for the node (``hit_reply``).

The bytes are ordinary wire format: fields may come in any order, so a parser (any
protobuf library) reads exactly the message the proto path builds;
``tests/test_cache_service.py`` compares the two field by field.
"""

from __future__ import annotations

from llmlab_grpc.proto.llmlab.v1 import cache_pb2, common_pb2

_LEN = 2  # wire type of strings, bytes and messages
_VARINT = 0


def _tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def varint(n: int) -> bytes:
    """``n`` (0 or more; a negative one raises ValueError) as a protobuf base-128 varint."""
    if 0 <= n < 0x80:
        return _SMALL[n]
    if 0x80 <= n < 0x4000:  # lengths of most answers: two bytes, no loop
        return bytes((n & 0x7F | 0x80, n >> 7))
    if 0x4000 <= n < 0x800000000:  # up to five bytes (a timestamp's seconds and nanos), no loop either
        if n < 0x200000:
            return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
        if n < 0x10000000:
            return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21 & 0x7F | 0x80, n >> 28))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]
_HITS_TAG = _tag(common_pb2.CacheEntry.DESCRIPTOR.fields_by_name["hits"].number, _VARINT)
_REPLY_ENTRY_TAG = _tag(cache_pb2.GetResponse.DESCRIPTOR.fields_by_name["entry"].number, _LEN)


def reply_head(header: bytes) -> bytes:
    """What ``hit_reply`` needs of a ``GetResponse`` without its entry, serialized as ``header``."""
    return header + _REPLY_ENTRY_TAG


def hit_reply(head: bytes, entry: bytes, hits: int) -> bytes:
    """A serialized ``GetResponse``: ``head`` (``reply_head``: its fields but the entry), then the
    entry: ``entry`` (a serialized ``CacheEntry`` without its hit count) and ``hits``."""
    count = _COUNTS[hits] if 0 <= hits < 0x80 else _HITS_TAG + varint(hits)
    return b"".join((head, varint(len(entry) + len(count)), entry, count))


_COUNTS = [_HITS_TAG + varint(i) if i else b"" for i in range(0x80)]  # hits 0 is no field at all
