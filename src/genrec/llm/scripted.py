"""An :class:`~genrec.llm.client.LLMClient` that answers from a script (tests, benchmarks).

It replays recorded outputs of a real model, or computes answers from the request, so code
above the client can be exercised and timed without a server.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from genrec.llm.client import ChatMessage, Completion, LLMError

__all__ = ["ScriptedClient"]

Responder = Callable[[Sequence[ChatMessage], dict[str, Any] | None], str]


class ScriptedClient:
    """Answers each ``chat`` call with the next scripted text.

    Args:
        script: Texts to return in turn (cycled), or a function ``(messages, schema) -> text``.
            A text that is an :class:`LLMError` instance is raised instead.
    """

    def __init__(self, script: Iterable[str | LLMError] | Responder) -> None:
        self._fn: Responder | None = script if callable(script) else None
        self._it = None if callable(script) else itertools.cycle(list(script))
        self._lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []

    def chat(self, messages: Sequence[ChatMessage], *, schema: dict[str, Any] | None = None,
             max_tokens: int = 256, temperature: float = 0.0,
             seed: int | None = None) -> Completion:
        """Return the next scripted answer (see :class:`~genrec.llm.client.LLMClient`)."""
        with self._lock:
            self.calls.append({"messages": list(messages), "schema": schema,
                               "max_tokens": max_tokens})
            out = self._fn(messages, schema) if self._fn is not None else next(self._it)  # type: ignore[arg-type]
        if isinstance(out, LLMError):
            raise out
        return Completion(out, "stop", structured="json_schema" if schema else "none")
