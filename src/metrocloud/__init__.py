"""metrocloud: the open software of the European Metrology Cloud."""

from metrocloud.domain.errors import MetrocloudError

__all__ = ["MetrocloudError", "__version__"]

__version__ = "0.1.0.dev0"
