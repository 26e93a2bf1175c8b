"""A local stand-in for Replicate's HTTP API, enough for the replicate library's run, stream and deployments.

The client under test is the real replicate library, pointed here with REPLICATE_BASE_URL; only the server is
fake, because no test may reach api.replicate.com. It records every request, validates prediction inputs
against the model's schema as the API does (HTTP 422), and serves the stream URL as Server-Sent Events.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from tests.helpers import ROOT
from tests.helpers.localserver import QuietHandler, local_server

TOKEN = "r8_fake_test_token"
STAMP = "2026-11-01T12:00:00.000000Z"
SCHEMA = json.loads((ROOT / ".cog" / "openapi_schema.json").read_text(encoding="utf-8"))
HARDWARE = [
    {"sku": "cpu", "name": "CPU"},
    {"sku": "gpu-t4", "name": "Nvidia T4 GPU"},
    {"sku": "gpu-l40s", "name": "Nvidia L40S GPU"},
    {"sku": "gpu-a100-large", "name": "Nvidia A100 (80GB) GPU"},
    {"sku": "gpu-h100", "name": "Nvidia H100 GPU"},
]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeReplicate:
    account: str = "alice"
    # "owner/model" -> its version ids, oldest first (the last is the latest).
    models: dict[str, list[str]] = field(default_factory=lambda: {"alice/pregunta": ["v1", "v2"]})
    output: list[str] = field(default_factory=lambda: ["Par", "ís", "."])
    official: set[str] = field(default_factory=set)  # models that may be run without a version
    error: str | None = None  # predictions fail with this message
    # "succeeded": done within Prefer: wait; "starting": done at the first GET (the client polls).
    status_on_create: str = "succeeded"
    hardware: list[dict[str, str]] = field(default_factory=lambda: copy.deepcopy(HARDWARE))
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method in ("POST", "PATCH", "PUT", "DELETE")]

    def add_deployment(self, owner: str, name: str, *, model: str, version: str, hardware: str, lo: int, hi: int):
        self.deployments[f"{owner}/{name}"] = _deployment(owner, name, 1, model, version, hardware, lo, hi)

    # --- routing ----------------------------------------------------------------------------------

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:1] != ["v1"]:
            return 404, _problem(404, "Not found")
        parts = parts[1:]
        if method == "GET" and parts == ["account"]:
            return 200, {"type": "user", "username": self.account, "name": self.account.title(), "github_url": None}
        if method == "GET" and parts == ["hardware"]:
            return 200, self.hardware
        if parts[:1] == ["models"] and len(parts) >= 3:
            return self._models(method, "/".join(parts[1:3]), parts[3:], body)
        if parts[:1] == ["predictions"]:
            return self._predictions(method, parts[1:], body)
        if parts[:1] == ["deployments"]:
            return self._deployments(method, parts[1:], body)
        return 404, _problem(404, "Not found")

    def _models(self, method: str, model: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if model not in self.models:
            return 404, _problem(404, "Not found", "Model not found")
        versions = self.models[model]
        if method == "GET" and not rest:
            latest = _version(versions[-1]) if versions else None
            owner, name = model.split("/")
            return 200, {
                "url": f"https://replicate.com/{model}",
                "owner": owner,
                "name": name,
                "description": None,
                "visibility": "private",
                "github_url": None,
                "paper_url": None,
                "license_url": None,
                "run_count": 0,
                "cover_image_url": None,
                "default_example": None,
                "latest_version": latest,
            }
        if method == "GET" and len(rest) == 2 and rest[0] == "versions":
            return (200, _version(rest[1])) if rest[1] in versions else (404, _problem(404, "Not found"))
        if method == "POST" and rest == ["predictions"]:
            # Replicate picks the version only for official models; the others are run by version.
            if model not in self.official:
                return 404, _problem(404, "Not found", "The requested resource could not be found.")
            return self._create(model, versions[-1], body)
        return 404, _problem(404, "Not found")

    def _predictions(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if method == "POST" and not rest:
            version = body.get("version")
            model = next((m for m, vs in self.models.items() if version in vs), None)
            if model is None:
                return 422, _problem(422, "Invalid version", f"version {version!r} does not exist")
            return self._create(model, version, body)
        if method == "GET" and len(rest) == 1 and rest[0] in self.predictions:
            prediction = self.predictions[rest[0]]
            if prediction["status"] in ("starting", "processing"):
                self._finish(prediction)
            return 200, prediction
        return 404, _problem(404, "Not found")

    def _deployments(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if method == "POST" and not rest:
            key = f"{self.account}/{body['name']}"
            if key in self.deployments:
                return 409, _problem(409, "Conflict", "A deployment with that name already exists")
            c = body
            self.deployments[key] = _deployment(
                self.account, c["name"], 1, c["model"], c["version"], c["hardware"], c["min_instances"],
                c["max_instances"],
            )  # fmt: skip
            return 201, self.deployments[key]
        key = "/".join(rest[:2])
        if key not in self.deployments:
            return 404, _problem(404, "Not found", "Deployment not found")
        deployment = self.deployments[key]
        if method == "GET" and len(rest) == 2:
            return 200, deployment
        if method == "PATCH" and len(rest) == 2:
            release = deployment["current_release"]
            config = {**release["configuration"], **{k: v for k, v in body.items() if k != "version"}}
            deployment["current_release"] = {
                **release,
                "number": release["number"] + 1,
                "version": body.get("version", release["version"]),
                "configuration": config,
            }
            return 200, deployment
        if method == "POST" and rest[2:] == ["predictions"]:
            release = deployment["current_release"]
            return self._create(release["model"], release["version"], body)
        return 404, _problem(404, "Not found")

    def _create(self, model: str, version: str, body: Any) -> tuple[int, Any]:
        problems = _validate_input(body.get("input") or {})
        if problems:
            return 422, _problem(422, "Input validation failed", "\n".join(problems))
        number = len(self.predictions) + 1
        pid = f"p{number}"
        urls = {"get": f"{self.url}/v1/predictions/{pid}", "cancel": f"{self.url}/v1/predictions/{pid}/cancel"}
        if body.get("stream"):
            urls["stream"] = f"{self.url}/stream/{pid}"
        prediction = {
            "id": pid,
            "model": model,
            "version": version,
            "status": "starting",
            "input": body.get("input"),
            "output": None,
            "logs": "",
            "error": None,
            "metrics": {},
            "created_at": STAMP,
            "started_at": None,
            "completed_at": None,
            "urls": urls,
        }
        self.predictions[pid] = prediction
        if self.status_on_create != "starting" and not body.get("stream"):
            self._finish(prediction)
        return 201, prediction

    def _finish(self, prediction: dict[str, Any]) -> None:
        prediction.update(started_at=STAMP, completed_at=STAMP, output=list(self.output))
        if self.error:
            prediction.update(status="failed", error=self.error)
        else:
            prediction.update(status="succeeded", metrics={"predict_time": 0.1})

    def sse(self, pid: str) -> bytes:
        """The prediction's event stream as Replicate sends it: output events, then error or done."""
        events = []
        for i, chunk in enumerate(self.output):
            data = "".join(f"data: {line}\n" for line in chunk.split("\n"))
            events.append(f"event: output\nid: {pid}:{i}\n{data}\n")
        if self.error:
            events.append(f"event: error\nid: {pid}:e\ndata: {json.dumps({'detail': self.error})}\n\n")
            events.append(f'event: done\nid: {pid}:d\ndata: {{"reason": "error"}}\n\n')
        else:
            events.append(f"event: done\nid: {pid}:d\ndata: {{}}\n\n")
        self._finish(self.predictions[pid])
        return "".join(events).encode()


def _validate_input(value: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(SCHEMA["components"]["schemas"]["Input"])
    return [f"- input.{'.'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in validator.iter_errors(value)]


def _problem(status: int, title: str, detail: str | None = None) -> dict[str, Any]:
    return {"status": status, "title": title, "detail": detail or title}


def _version(vid: str) -> dict[str, Any]:
    return {"id": vid, "created_at": STAMP, "cog_version": "0.23.1", "openapi_schema": SCHEMA}


def _deployment(owner, name, number, model, version, hardware, lo, hi) -> dict[str, Any]:
    return {
        "owner": owner,
        "name": name,
        "current_release": {
            "number": number,
            "model": model,
            "version": version,
            "created_at": STAMP,
            "created_by": {"type": "user", "username": owner, "name": owner, "github_url": None},
            "configuration": {"hardware": hardware, "min_instances": lo, "max_instances": hi},
        },
    }


@contextmanager
def serve_fake_replicate(api: FakeReplicate) -> Iterator[FakeReplicate]:
    class Handler(QuietHandler):
        def _answer(self) -> None:
            path = urlparse(self.path).path
            body = self.read_json()
            headers = {k: v for k, v in self.headers.items() if k in ("Authorization", "Prefer", "Accept")}
            api.requests.append(Recorded(self.command, path, headers, body))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.send_json(401, _problem(401, "Unauthenticated", "You did not pass a valid token"))
            if self.command == "GET" and path.startswith("/stream/"):
                return self.send_body(200, api.sse(path.removeprefix("/stream/")), "text/event-stream")
            return self.send_json(*api.route(self.command, path, body))

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

    with local_server(Handler) as url:
        api.url = url
        yield api
