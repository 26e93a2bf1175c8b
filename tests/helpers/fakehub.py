"""A local stand-in for the Hugging Face hub's HTTP API, enough for huggingface_hub.snapshot_download.

The client under test is the real huggingface_hub, pointed here with HF_ENDPOINT; only the server is fake,
because no test may reach the real hub.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from tests.helpers.localserver import QuietHandler, local_server


@dataclass
class FakeHub:
    repo: str
    files: dict[str, bytes]
    commit: str
    url: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)

    def _route(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        api = f"/api/models/{self.repo}/"
        if path.startswith(api + "revision/"):
            info = {"id": self.repo, "sha": self.commit, "siblings": [{"rfilename": f} for f in self.files]}
            return 200, json.dumps(info).encode(), {"Content-Type": "application/json"}
        if path.startswith(api + "tree/"):
            tree = [
                {"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for f, b in self.files.items()
            ]
            return 200, json.dumps(tree).encode(), {"Content-Type": "application/json"}
        resolve = f"/{self.repo}/resolve/"
        if path.startswith(resolve):
            name = path[len(resolve) :].partition("/")[2]
            if name in self.files:
                data = self.files[name]
                etag = '"' + hashlib.sha256(data).hexdigest() + '"'
                return 200, data, {"X-Repo-Commit": self.commit, "ETag": etag}
            return 404, b"", {"X-Error-Code": "EntryNotFound"}
        return 404, b"", {"X-Error-Code": "RepoNotFound"}


@contextmanager
def serve_fake_hub(hub: FakeHub) -> Iterator[FakeHub]:
    class Handler(QuietHandler):
        def _answer(self, with_body: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.requests.append((self.command, path))
            status, body, headers = hub._route(path)
            self.send_body(status, body, None, headers=headers, with_body=with_body)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

    with local_server(Handler) as url:
        hub.url = url
        yield hub
