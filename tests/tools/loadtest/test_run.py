"""Running a level and main(): requests spread over the users, the duration, errors kept, refusals before sending."""

from __future__ import annotations

import asyncio
import json

from llmserve.tools import cli
from llmserve.tools.loadtest.run import run_level
from llmserve.tools.loadtest.stream import (
    CLIENT_ERROR,
    OK,
    StreamTracker,
)
from tests.helpers.fakecog import FakeCog, serve_fake_cog


def fake_send(latency: float = 0.0, fail_on: int | None = None):
    calls = []

    async def send(tracker: StreamTracker) -> None:
        calls.append(tracker)
        if len(calls) == fail_on:
            raise KeyError("a bug in the client")
        await asyncio.sleep(latency)  # the fake request's own duration
        tracker.on_chunk("hola", tracker.started_at + latency / 2)
        tracker.on_completed("succeeded", None, {"output_token_count": 4}, tracker.started_at + latency)

    return send, calls


def test_run_level_sends_exactly_the_requests_spread_over_the_users():
    send, calls = fake_send(latency=0.01)
    results, wall = asyncio.run(run_level(send, users=3, requests=7, duration_s=60))
    assert [r.index for r in results] == list(range(7))
    assert {r.user for r in results} == {0, 1, 2}
    assert all(r.status == OK and r.users == 3 for r in results)
    assert wall >= 0.02  # 7 requests over 3 users: at least 3 in a row


def test_run_level_stops_sending_at_its_duration():
    send, calls = fake_send(latency=0.05)
    results, _ = asyncio.run(run_level(send, users=1, requests=1000, duration_s=0.12))
    assert 1 <= len(results) <= 4


def test_a_client_error_is_recorded_and_the_level_goes_on():
    send, _ = fake_send(fail_on=2)
    results, _ = asyncio.run(run_level(send, users=1, requests=3, duration_s=60))
    assert [r.status for r in results] == [OK, CLIENT_ERROR, OK]
    assert "KeyError" in results[1].error


def test_main_refuses_a_remote_url_before_any_request(tmp_path, capsys):
    assert cli.main(["loadtest", "--url", "http://192.168.1.10:5000", "--out", str(tmp_path / "out")]) == 2
    assert "192.168.1.10 is not this machine" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_main_says_how_to_start_a_server_that_is_not_there(tmp_path, capsys):
    with serve_fake_cog(FakeCog("invalid")) as fake:
        url = fake.url  # closed once the block ends
    assert cli.main(["loadtest", "--url", url, "--out", str(tmp_path / "out")]) == 2
    assert "Start the server first" in capsys.readouterr().err


def test_a_server_that_breaks_between_levels_still_gets_the_finished_levels_written(tmp_path, capsys):
    fake = FakeCog("ok", health=["READY", "DEFUNCT"])  # READY before the first level, broken after it
    with serve_fake_cog(fake):
        code = cli.main(
            ["loadtest", "--url", fake.url, "--users", "1,2", "--requests", "2", "--out", str(tmp_path / "out")]
        )
    assert code == 2 and "E6003 ServerNotReady" in capsys.readouterr().err
    payload = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert [level["users"] for level in payload["levels"]] == [1] and payload["levels"][0]["ok"] == 2
    assert payload["stopped"].startswith("E6003 ServerNotReady")
    assert len((tmp_path / "out" / "requests.csv").read_text(encoding="utf-8").splitlines()) == 1 + 2
