"""How a node's record rides in its Serf tags (issue 12, 2).

Serf tags are a map of strings, at most 512 bytes once Serf has encoded them (memberlist's
`MetaMaxSize`: a byte of its own, then the msgpack map). A node carries one: `mx-heat`, its
latest signed heat record (`record`), base64 (a tag is a string, and Serf's agent need not keep
arbitrary bytes intact in one): about 250 bytes, 390 at most. Its certificate does not ride
along: every tag update is gossiped to every node (see `publish`), so it travels in a Serf
query (`CERT_QUERY`, carrying the asker's own) and in the answers to it (see `node`). Reading a
member's tags never trusts them: a tag that is not base64, or longer than its largest honest
value, is refused with the verifier's reasons ("malformed", "oversized"). Pure.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

from maxwell.gossip.record import MAX_RECORD_BYTES, RecordError

HEAT_TAG: Final = "mx-heat"
CERT_QUERY: Final = "maxwell-cert"  # a Serf query carrying the asker's certificate; answers: theirs
SERF_TAGS_LIMIT: Final = 512  # bytes: Serf's encoded tags, a leading byte of its own included


def node_tags(record: bytes) -> dict[str, str]:
    """The tags that carry `record` (a `RecordError` if they cannot fit)."""
    tags = {HEAT_TAG: _text(record)}
    size = 1 + len(msgpack.packb(tags))
    if size > SERF_TAGS_LIMIT:
        raise RecordError("oversized", f"tags of {size} bytes, over Serf's {SERF_TAGS_LIMIT}")
    return tags


def record_in(tags: Mapping[str, str]) -> bytes | None:
    """The heat record a member's tags carry, None without one (a `RecordError` if unusable)."""
    return _bytes(tags, HEAT_TAG, MAX_RECORD_BYTES)


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes(tags: Mapping[str, str], tag: str, limit: int) -> bytes | None:
    text = tags.get(tag)
    if text is None:
        return None
    if not isinstance(text, str):
        raise RecordError("malformed", f"tag {tag} is not text")
    if len(text) > 4 * ((limit + 2) // 3):
        raise RecordError("oversized", f"tag {tag} of {len(text)} characters")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise RecordError("malformed", f"tag {tag} is not base64") from None
