"""Configuration: ``load_config`` reads YAML, JSON or a dict into a validated ``Config``."""

from .errors import ConfigError
from .loader import load_config
from .model import (
    Admin,
    Auth,
    Config,
    FilterSpec,
    HealthCheck,
    Instance,
    Limits,
    Listener,
    ListenerTLS,
    LogTarget,
    Outlier,
    Predicate,
    Provider,
    Rate,
    RateLimit,
    Redis,
    Route,
    Service,
    ServiceTLS,
)

__all__ = [
    "Admin",
    "Auth",
    "Config",
    "ConfigError",
    "FilterSpec",
    "HealthCheck",
    "Instance",
    "Limits",
    "Listener",
    "ListenerTLS",
    "LogTarget",
    "Outlier",
    "Predicate",
    "Provider",
    "Rate",
    "RateLimit",
    "Redis",
    "Route",
    "Service",
    "ServiceTLS",
    "load_config",
]
