"""Heat gossip between Maxwell nodes.

Underneath is HashiCorp Serf: each node runs its own `serf agent` (`agent.SerfAgent`, a child
that cannot outlive Maxwell) for membership, failure detection and encrypted gossip, and talks to
it over Serf's msgpack RPC (`rpc.SerfRpc`). On top, Maxwell's signed heat records
(docs/gossip.md):

- `rpc`: the RPC client; its framing (`ResponseFramer`) and body parsers are pure.
- `agent`: starting, readying and stopping the agent process; `agent_argv` is pure.
- `record`, `trust`, `keys`: the signed record, who is believed, the key files (pure but keys).
- `tags`, `publish`: how a record rides in Serf's tags, and when a node speaks (pure).
- `view`: what a node believes of its cluster; `metrics`: that, for Prometheus.
- `config`, `node`: the daemon's gossip settings, and `GossipNode`, its gossip thread.
- `demo`: `maxwell cluster demo`.
"""

from maxwell.gossip.agent import (
    EncryptKeyError,
    SerfAgent,
    SerfAgentError,
    SerfMissingError,
    agent_argv,
    decode_encrypt_key,
)
from maxwell.gossip.rpc import (
    EventStream,
    Member,
    MemberEvent,
    QueryEvent,
    QueryResponse,
    QueryResult,
    SerfAuthError,
    SerfCommandError,
    SerfProtocolError,
    SerfRpc,
    SerfRpcError,
    SerfUnreachableError,
    StreamEvent,
    UserEvent,
)

__all__ = [
    "EncryptKeyError",
    "EventStream",
    "Member",
    "MemberEvent",
    "QueryEvent",
    "QueryResponse",
    "QueryResult",
    "SerfAgent",
    "SerfAgentError",
    "SerfAuthError",
    "SerfCommandError",
    "SerfMissingError",
    "SerfProtocolError",
    "SerfRpc",
    "SerfRpcError",
    "SerfUnreachableError",
    "StreamEvent",
    "UserEvent",
    "agent_argv",
    "decode_encrypt_key",
]
