"""One domain exception hierarchy, rendered as RFC 9457 problem JSON in one place (service/api/app.py)."""

from __future__ import annotations

from typing import Any


class Problem(Exception):
    """An error a client can act on. ``extra`` adds members such as ``field`` and ``limit`` to the body."""

    status = 400
    title = "Bad request"
    slug = "bad-request"
    answered = True  # False: no client reads the answer, so the response is not counted

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail, self.headers, self.extra = detail, headers or {}, extra

    def body(self, instance: str) -> dict[str, Any]:
        return {"type": f"https://wattserve.dev/problems/{self.slug}", "title": self.title, "status": self.status,
                "detail": self.detail, "instance": instance, **self.extra}

    def openai_error(self) -> dict[str, Any]:
        """The problem as OpenAI's clients read it (``body["error"]``: their exceptions' message, param and code),
        an extension member of the problem JSON on the OpenAI-compatible routes."""
        kind = {401: "authentication_error", 429: "rate_limit_error"}.get(
            self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"message": self.detail, "type": kind, "param": self.extra.get("field"), "code": self.slug}


class NotFound(Problem):
    status, title, slug = 404, "Not found", "not-found"


class TaskMismatch(Problem):
    status, title, slug = 400, "Model does not serve this endpoint", "task-mismatch"


class TooLarge(Problem):
    status, title, slug = 413, "Content too large", "too-large"


class Invalid(Problem):
    status, title, slug = 422, "Invalid request", "invalid"


class Overloaded(Problem):
    status, title, slug = 429, "Too many requests", "overloaded"


class Unauthorized(Problem):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class NotReady(Problem):
    status, title, slug = 503, "Model not ready", "not-ready"


class Timeout(Problem):
    status, title, slug = 504, "Inference timed out", "timeout"


class ClientGone(Problem):
    """The client closed its connection (nginx's 499): nobody reads the answer, and nothing is counted or logged."""

    status, title, slug = 499, "Client closed request", "client-closed"
    answered = False


class Internal(Problem):
    status, title, slug = 500, "Internal server error", "internal"


class HTTPProblem(Problem):
    """An HTTP error Starlette raised itself (404 for an unknown path, 405 with its Allow header, ...): its status
    and reason become the problem's status and title."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, headers=headers)
        self.status, self.title, self.slug = status, detail, f"http-{status}"
