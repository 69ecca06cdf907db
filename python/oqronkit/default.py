"""The default kit behind the module-level functions (`oqronkit.webhook`,
`oqronkit.create_webhook`, `oqronkit.resend_webhook`, ...), as in the original.

It is made on first use, on the backend named by the `OQRONKIT_BACKEND` environment variable
(`memory://` when unset), or set explicitly with `set_default_kit`. Each function is the
`OqronKit` method of the same name, called on that kit.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from oqronkit.kit import OqronKit

P = ParamSpec("P")
T = TypeVar("T")

_default: OqronKit | None = None
_lock = threading.Lock()


def default_kit() -> OqronKit:
    """The default kit, made on first use from `OQRONKIT_BACKEND`."""
    global _default
    with _lock:
        if _default is None:
            _default = OqronKit(os.environ.get("OQRONKIT_BACKEND", "memory://"))
        return _default


def set_default_kit(kit: OqronKit | None) -> None:
    """Makes `kit` the default (None: a fresh one is made on next use)."""
    global _default
    with _lock:
        _default = kit


def _on_default_kit(method: Callable[Concatenate[OqronKit, P], T]) -> Callable[P, T]:
    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return method(default_kit(), *args, **kwargs)

    return call


webhook = _on_default_kit(OqronKit.webhook)
create_webhook = _on_default_kit(OqronKit.create_webhook)
update_webhook = _on_default_kit(OqronKit.update_webhook)
delete_webhook = _on_default_kit(OqronKit.delete_webhook)
pause_webhook = _on_default_kit(OqronKit.pause_webhook)
resume_webhook = _on_default_kit(OqronKit.resume_webhook)
resend_webhook = _on_default_kit(OqronKit.resend_webhook)
cancel_delivery = _on_default_kit(OqronKit.cancel_delivery)
get_delivery = _on_default_kit(OqronKit.get_delivery)
list_deliveries = _on_default_kit(OqronKit.list_deliveries)
replay = _on_default_kit(OqronKit.replay)
