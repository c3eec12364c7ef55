"""Failures answered in Stripe's error shape: `{"error": {"type", "code", "param", "message"}}`."""


class StripeError(Exception):
    """An API failure, rendered as Stripe renders it."""

    def __init__(self, message, *, status=400, type="invalid_request_error", code=None, param=None, extra=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.extra = extra or {}

    def body(self):
        """The JSON body Stripe would send."""
        error = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


def resource_missing(kind, object_id, param="id"):
    """The 404 Stripe gives for an id it does not know."""
    return StripeError(
        f"No such {kind}: '{object_id}'", status=404, code="resource_missing", param=param
    )


def parameter_missing(param):
    """The 400 Stripe gives when a required parameter is absent."""
    return StripeError(f"Missing required param: {param}.", code="parameter_missing", param=param)


def invalid_state(message, code=None, param=None):
    """A 400 for an operation the object's current state does not allow."""
    return StripeError(message, code=code, param=param)
