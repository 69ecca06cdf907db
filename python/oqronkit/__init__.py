"""OqronKit: outbound webhook fan-out with a Rust core."""

from oqronkit._core import __version__
from oqronkit.breaker import Breaker, create_circuit_breaker
from oqronkit.errors import (
    CircuitOpenError,
    ConfigurationError,
    InvalidEventName,
    InvalidPattern,
    OqronKitError,
)
from oqronkit.signing import (
    sign_standard_webhook,
    sign_webhook_payload,
    verify_standard_webhook,
    verify_webhook_signature,
)

__all__ = [
    "Breaker",
    "CircuitOpenError",
    "ConfigurationError",
    "InvalidEventName",
    "InvalidPattern",
    "OqronKitError",
    "__version__",
    "create_circuit_breaker",
    "sign_standard_webhook",
    "sign_webhook_payload",
    "verify_standard_webhook",
    "verify_webhook_signature",
]
