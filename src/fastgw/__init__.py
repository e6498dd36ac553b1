"""fastgw: the security front door of a microservice system."""

__version__ = "0.1.0"

from . import _core  # noqa: F401 - first: it decides which request path is imported
from .config import ConfigError, load_config
from .filters import filter
from .gateway import Gateway

__all__ = ["ConfigError", "Gateway", "__version__", "filter", "load_config"]
