"""Fault injection: the next N requests matching a method and path answer 500 or 429, reset, or hang."""

import re
import threading
from dataclasses import dataclass

from stripe_sandbox.errors import StripeError
from stripe_sandbox.state import random_token

MODES = ("500", "429", "reset", "hang")


@dataclass
class Fault:
    id: str
    mode: str
    method: str
    path: str | None
    path_regex: str | None
    remaining: int
    hang_seconds: float

    def matches(self, method, path):
        if self.method not in ("*", method):
            return False
        if self.path_regex is not None:
            return re.search(self.path_regex, path) is not None
        return path.startswith(self.path or "")

    def describe(self):
        return {
            "id": self.id,
            "mode": self.mode,
            "method": self.method,
            "path": self.path,
            "path_regex": self.path_regex,
            "remaining": self.remaining,
            "hang_seconds": self.hang_seconds,
        }


class FaultBook:
    """Armed faults, consumed one matching request at a time, first armed first used."""

    def __init__(self):
        self.lock = threading.Lock()
        self.faults = []
        # Set when faults are cleared, so hanging requests wake up instead of outliving the test that armed them.
        self.released = threading.Event()

    def arm(self, spec):
        """Add a fault from a control request's JSON."""
        mode = str(spec.get("mode", ""))
        if mode not in MODES:
            raise StripeError(f"mode must be one of {', '.join(MODES)}", param="mode")
        path, path_regex = spec.get("path"), spec.get("path_regex")
        if (path is None) == (path_regex is None):
            raise StripeError("Give exactly one of path (a prefix) or path_regex", param="path")
        if path_regex is not None:
            try:
                re.compile(path_regex)
            except re.error as error:
                raise StripeError(f"path_regex does not compile: {error}", param="path_regex") from None
        count = spec.get("count", 1)
        hang_seconds = spec.get("hang_seconds", 30)
        if not isinstance(count, int) or count < 1:
            raise StripeError("count must be a positive integer", param="count")
        if not isinstance(hang_seconds, (int, float)) or hang_seconds < 0:
            raise StripeError("hang_seconds must be a number of seconds", param="hang_seconds")
        fault = Fault(
            id=f"fault_{random_token(12)}",
            mode=mode,
            method=str(spec.get("method", "*")).upper(),
            path=path,
            path_regex=path_regex,
            remaining=count,
            hang_seconds=hang_seconds,
        )
        with self.lock:
            self.released.clear()
            self.faults.append(fault)
        return fault

    def take(self, method, path):
        """The fault this request triggers, if any, counting it as used."""
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def describe(self):
        with self.lock:
            return [fault.describe() for fault in self.faults]

    def clear(self):
        """Disarm every fault and wake every hanging request."""
        with self.lock:
            self.faults.clear()
            self.released.set()

    def hang(self, seconds):
        """Hold a request for the fault's time, or until faults are cleared."""
        self.released.wait(seconds)
