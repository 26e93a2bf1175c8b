"""A local stand-in for an OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama), for the judge.

The client under test is the project's own requests code; only the server is fake, because no test may reach
api.openai.com. It records every request and answers each with the next of its scripted replies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from tests.helpers.localserver import QuietHandler, local_server


@dataclass
class Reply:
    content: str = ""
    status: int = 200


@dataclass
class FakeOpenAI:
    # Answered in order; the last one repeats once they run out.
    replies: list[Reply] = field(default_factory=lambda: [Reply('{"score": 1, "explanation": "Correcta."}')])
    url: str = ""  # the base URL, ending in /v1
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)

    def answer(self, path: str, body: Any) -> tuple[int, Any]:
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}
        reply = self.replies[min(len(self.requests) - 1, len(self.replies) - 1)]
        if reply.status != 200:
            return reply.status, {"error": {"message": reply.content}}
        message = {"role": "assistant", "content": reply.content}
        return 200, {"object": "chat.completion", "model": body["model"], "choices": [{"index": 0, "message": message}]}


@contextmanager
def serve_fake_openai(api: FakeOpenAI) -> Iterator[FakeOpenAI]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            path = urlparse(self.path).path
            body = self.read_json()
            api.requests.append((path, {k: v for k, v in self.headers.items()}, body))
            self.send_json(*api.answer(path, body))

    with local_server(Handler) as url:
        api.url = f"{url}/v1"
        yield api
