"""Use cases of the node: each module one capability, called by the API and the CLI."""

from metrocloud.services.node import Node, NodeNotInitialized, Recorded
from metrocloud.services.settings import Settings

__all__ = ["Node", "NodeNotInitialized", "Recorded", "Settings"]
