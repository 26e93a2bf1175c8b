"""Fixtures shared by the unit tests of the Replicate scripts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.fakereplicate import FakeReplicate, serve_fake_replicate


@pytest.fixture
def api() -> Iterator[FakeReplicate]:
    """A fake Replicate API on 127.0.0.1 with its default models, for one test."""
    with serve_fake_replicate(FakeReplicate()) as fake:
        yield fake
