"""OqronKit: outbound webhook fan-out with a Rust core."""

from oqronkit._core import __version__
from oqronkit.breaker import Breaker, create_circuit_breaker
from oqronkit.clock import Clock, FakeClock, SystemClock
from oqronkit.config import CircuitBreaker, Endpoint, RateLimit, Retries, Security, Throttle
from oqronkit.default import (
    cancel_delivery,
    create_webhook,
    default_kit,
    delete_webhook,
    get_delivery,
    list_deliveries,
    pause_webhook,
    replay,
    resend_webhook,
    resume_webhook,
    set_default_kit,
    update_webhook,
    webhook,
)
from oqronkit.errors import (
    BackendUnavailable,
    CircuitOpenError,
    ConfigurationError,
    DeliveryNotFound,
    DeliveryStateError,
    EgressDenied,
    InvalidEventName,
    InvalidPattern,
    InvalidPayload,
    KitNotRunning,
    OqronKitError,
    PayloadTooLarge,
)
from oqronkit.events import LifecycleEvent
from oqronkit.kit import OqronKit
from oqronkit.models import Attempt, Delivery
from oqronkit.signing import (
    sign_standard_webhook,
    sign_webhook_payload,
    verify_standard_webhook,
    verify_webhook_signature,
)
from oqronkit.transport import Http1Transport
from oqronkit.webhooks import Webhook

__all__ = [
    "Attempt",
    "BackendUnavailable",
    "Breaker",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConfigurationError",
    "Delivery",
    "DeliveryNotFound",
    "DeliveryStateError",
    "EgressDenied",
    "Endpoint",
    "FakeClock",
    "Http1Transport",
    "InvalidEventName",
    "InvalidPattern",
    "InvalidPayload",
    "KitNotRunning",
    "LifecycleEvent",
    "OqronKit",
    "OqronKitError",
    "PayloadTooLarge",
    "RateLimit",
    "Retries",
    "Security",
    "SystemClock",
    "Throttle",
    "Webhook",
    "__version__",
    "cancel_delivery",
    "create_circuit_breaker",
    "create_webhook",
    "default_kit",
    "delete_webhook",
    "get_delivery",
    "list_deliveries",
    "pause_webhook",
    "replay",
    "resend_webhook",
    "resume_webhook",
    "set_default_kit",
    "sign_standard_webhook",
    "sign_webhook_payload",
    "update_webhook",
    "verify_standard_webhook",
    "verify_webhook_signature",
    "webhook",
]
