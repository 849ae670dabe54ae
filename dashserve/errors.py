"""Every error a client can see, each mapped to HTTP status, DashScope code and OpenAI type.

    DashServeError
    ├── InvalidRequest            400 InvalidParameter        invalid_request_error
    │   ├── MissingInput          400 BadRequest.EmptyInput
    │   ├── PromptTooLong         400 InvalidParameter (context overflow)
    │   └── UnsupportedFeature    400 InvalidParameter (a documented feature we refuse)
    ├── DataInspectionFailed      400 DataInspectionFailed    data_inspection_failed
    ├── PayloadTooLarge           413 BadRequest.TooLarge
    ├── AuthenticationFailed      401 InvalidApiKey           invalid_api_key
    ├── AccessDenied              403 AccessDenied            access_denied
    │   ├── ModelAccessDenied     403 Model.AccessDenied
    │   └── WorkspaceAccessDenied 403 Workspace.AccessDenied
    ├── ModelNotFound             404 ModelNotFound           model_not_found
    ├── NotFound                  404 NotFound                (files, keys)
    ├── Throttled                 429 Throttling.RateQuota    limit_requests   (carries retry_after_s)
    │   ├── ConcurrencyThrottled  429 Throttling
    │   ├── QuotaExhausted        429 Throttling.AllocationQuota (not retryable; file quotas)
    │   └── ServerBusy            429 Throttling  (engine queue or KV cache full)
    ├── InternalError             500 InternalError           internal_error
    ├── ModelUnavailable          503 ModelUnavailable        service_unavailable
    └── ServiceUnavailable        503 ServiceUnavailable      service_unavailable (database)
        └── SearchUnavailable     503 ServiceUnavailable      (forced web search failed)

Raised anywhere below ``api`` (the engine and ``SamplingParams`` included: an out-of-range
request is an ``InvalidRequest`` from where it is found) and rendered per protocol by the two
exception handlers; no layer translates one error into another.
"""

from __future__ import annotations


class DashServeError(Exception):
    """Base of all client-visible errors."""

    status_code: int = 500
    code: str = "InternalError"
    openai_code: str = "internal_error"
    openai_type: str = "internal_error"
    default_message: str = (
        "An internal error has occured, please try again later or contact service support."
    )
    retryable: bool | None = None  # None: let the client decide from the status

    def __init__(self, message: str | None = None, *, param: str | None = None) -> None:
        self.message = message or self.default_message
        self.param = param
        super().__init__(self.message)


class InvalidRequest(DashServeError):
    status_code = 400
    code = "InvalidParameter"
    openai_code = "invalid_parameter_error"
    openai_type = "invalid_request_error"
    default_message = (
        "Required parameter(s) missing or invalid, please check the request parameters."
    )


class MissingInput(InvalidRequest):
    code = "BadRequest.EmptyInput"
    default_message = "Required input parameter missing from request."


class PromptTooLong(InvalidRequest):
    pass


class UnsupportedFeature(InvalidRequest):
    pass


class DataInspectionFailed(DashServeError):
    """Content screening (``X-DashScope-DataInspection``) blocked the input or the output."""

    status_code = 400
    code = "DataInspectionFailed"
    openai_code = "data_inspection_failed"
    openai_type = "data_inspection_failed"
    default_message = "Input data may contain inappropriate content."


class PayloadTooLarge(DashServeError):
    status_code = 413
    code = "BadRequest.TooLarge"
    openai_code = "request_too_large"
    openai_type = "invalid_request_error"
    default_message = "Payload Too Large."


class AuthenticationFailed(DashServeError):
    status_code = 401
    code = "InvalidApiKey"
    openai_code = "invalid_api_key"
    openai_type = "invalid_request_error"
    default_message = "Invalid API-key provided."


class AccessDenied(DashServeError):
    status_code = 403
    code = "AccessDenied"
    openai_code = "access_denied"
    openai_type = "invalid_request_error"
    default_message = "Access denied."
    principal: object | None = None  # the known caller refused, when there is one


class ModelAccessDenied(AccessDenied):
    code = "Model.AccessDenied"
    default_message = "Model access denied."


class WorkspaceAccessDenied(AccessDenied):
    code = "Workspace.AccessDenied"
    default_message = "Workspace access denied."


class ModelNotFound(DashServeError):
    status_code = 404
    code = "ModelNotFound"
    openai_code = "model_not_found"
    openai_type = "invalid_request_error"
    default_message = "Model not exist."


class NotFound(DashServeError):
    status_code = 404
    code = "NotFound"
    openai_code = "not_found"
    openai_type = "invalid_request_error"
    default_message = "The requested resource was not found."


class Throttled(DashServeError):
    status_code = 429
    code = "Throttling.RateQuota"
    openai_code = "limit_requests"
    openai_type = "limit_requests"
    default_message = "Requests rate limit exceeded, please try again later."
    retryable = True

    def __init__(
        self, message: str | None = None, *, param: str | None = None,
        retry_after_s: float = 1.0,
    ) -> None:
        super().__init__(message, param=param)
        self.retry_after_s = retry_after_s


class ConcurrencyThrottled(Throttled):
    code = "Throttling"
    default_message = "Requests throttling triggered."


class QuotaExhausted(Throttled):
    code = "Throttling.AllocationQuota"
    openai_code = "insufficient_quota"
    openai_type = "insufficient_quota"
    default_message = "Allocated quota exceeded, please increase your quota limit."
    retryable = False


class ServerBusy(Throttled):
    code = "Throttling"
    default_message = "Requests throttling triggered."


class InternalError(DashServeError):
    pass


class ModelUnavailable(DashServeError):
    status_code = 503
    code = "ModelUnavailable"
    openai_code = "service_unavailable"
    openai_type = "service_unavailable"
    default_message = "Model is unavailable, please try again later."
    retryable = True


class ServiceUnavailable(DashServeError):
    """Something the request needs (the database, a search provider) cannot be reached."""

    status_code = 503
    code = "ServiceUnavailable"
    openai_code = "service_unavailable"
    openai_type = "service_unavailable"
    default_message = "The service is temporarily unavailable, please try again later."
    retryable = True


class SearchUnavailable(ServiceUnavailable):
    default_message = "Web search is unavailable, please try again later."
