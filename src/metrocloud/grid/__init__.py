"""The Legal Metrology Grid: the mechanisms that join member-state nodes (docs/grid.md).

* :mod:`~metrocloud.grid.identity` - the trust anchor and node admissions;
* :mod:`~metrocloud.grid.peers` - the peer list (a view of the log);
* :mod:`~metrocloud.grid.signing` - signed node-to-node requests and answers;
* :mod:`~metrocloud.grid.nonces` - replay protection;
* :mod:`~metrocloud.grid.client` - the transport interface and the signing client;
* :mod:`~metrocloud.grid.outbox`, :mod:`~metrocloud.grid.delivery`,
  :mod:`~metrocloud.grid.inbox` - the durable outbox, its delivery, the receiver's inbox;
* :mod:`~metrocloud.grid.traffic` - the record of what crossed between nodes;
* :mod:`~metrocloud.grid.witness` - cosignatures, witnessed heads, split views.

The orchestration with a node (replication, look-ups, statistics, the witnessing round)
is :mod:`metrocloud.services.federation`.
"""

from metrocloud.grid.client import GridClient, HttpTransport, Reply, Transport
from metrocloud.grid.errors import NodeUnauthenticated, PeerRefused, PeerUnavailable
from metrocloud.grid.identity import admit_node, anchor_public_key, init_anchor, load_anchor
from metrocloud.grid.peers import Peer
from metrocloud.grid.witness import Cosignature

__all__ = [
    "Cosignature",
    "GridClient",
    "HttpTransport",
    "NodeUnauthenticated",
    "Peer",
    "PeerRefused",
    "PeerUnavailable",
    "Reply",
    "Transport",
    "admit_node",
    "anchor_public_key",
    "init_anchor",
    "load_anchor",
]
