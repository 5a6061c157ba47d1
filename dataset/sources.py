"""Pinned source packages: download, verify, extract.

Each source is a Debian or npm package at a fixed version with a fixed sha256. Downloads go
to ``CACHE/downloads`` (``apt-get download`` / ``npm pack``); a file already there with the
right hash is reused, so after the first fetch everything works offline. Extraction is done in
Python (Debian packages are ``ar`` archives holding a tar), only the members a builder needs,
into ``CACHE/sources/NAME-VERSION`` with a completion marker so an interrupted extraction is
redone rather than trusted.
"""

from __future__ import annotations

import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ticor._files import sha256_file
from ticor.errors import SourceError
from ticor.paths import cache_path


@dataclass(frozen=True)
class Source:
    """One pinned package."""

    name: str  # short name used for directories and in the manifest
    registry: str  # "debian" or "npm"
    package: str
    version: str
    filename: str  # what apt-get download / npm pack writes
    sha256: str
    license: str
    keep: tuple[str, ...]  # path prefixes (inside the package) to extract
    license_files: tuple[str, ...]  # paths (inside the extracted tree) to ship with the data

    @property
    def dirname(self) -> str:
        """Directory name of the extracted package under ``CACHE/sources``."""
        return f"{self.name}-{self.version.replace(':', '_')}"

    @property
    def spec(self) -> str:
        return f"{self.package}={self.version}" if self.registry == "debian" else (
            f"{self.package}@{self.version}"
        )


# The GCompris activities whose photographs are taken (``ticor.dataset.gcompris``).
GCOMPRIS_ACTIVITIES = ("explore_world_animals", "explore_farm_animals", "explore_monuments", "explore_world_music",
                       "categorization", "erase")
GCOMPRIS_RCC = "usr/share/gcompris-qt/rcc"
GCOMPRIS_QM = "usr/share/gcompris-qt/translations/gcompris_zh_TW.qm"

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="noto-emoji",
            registry="debian",
            package="fonts-noto-color-emoji",
            version="2.042-0+deb12u1",
            filename="fonts-noto-color-emoji_2.042-0+deb12u1_all.deb",
            sha256="a5ab0f69c7938423862320d9aca5dd187b3fd879d6a9a57dd52e17c3fa8d2751",
            license="OFL-1.1",
            keep=(
                "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
                "usr/share/doc/fonts-noto-color-emoji/copyright",
            ),
            license_files=("usr/share/doc/fonts-noto-color-emoji/copyright",),
        ),
        Source(
            name="cldr",
            registry="debian",
            package="unicode-cldr-core",
            version="41-0.1",
            filename="unicode-cldr-core_41-0.1_all.deb",
            sha256="35d30d5d3bee4d8244e95236259c4c2a0db06e21bad696515751fcfeee4d0260",
            license="Unicode-DFS-2016",
            keep=(
                "usr/share/unicode/cldr/common/annotations/en.xml",
                "usr/share/unicode/cldr/common/annotations/zh.xml",
                "usr/share/unicode/cldr/common/annotationsDerived/en.xml",
                "usr/share/unicode/cldr/common/annotationsDerived/zh.xml",
                "usr/share/doc/unicode-cldr-core/copyright",
            ),
            license_files=("usr/share/doc/unicode-cldr-core/copyright",),
        ),
        Source(
            name="tuxpaint-stamps",
            registry="debian",
            package="tuxpaint-stamps-default",
            version="2022.06.04-1",
            filename="tuxpaint-stamps-default_2022.06.04-1_all.deb",
            sha256="6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",
            license="GPL-2+",
            keep=("usr/share/tuxpaint/stamps/", "usr/share/doc/tuxpaint-stamps-default/copyright"),
            license_files=("usr/share/doc/tuxpaint-stamps-default/copyright",),
        ),
        Source(
            name="openclipart",
            registry="debian",
            package="openclipart-svg",
            version="1:0.18+dfsg-19",
            filename="openclipart-svg_1%3a0.18+dfsg-19_all.deb",
            sha256="989712d90d57dfa3230049f553bb43b76c30ee4d4b8c5f6e106e33f7db5cbdc5",
            license="public-domain (per-file cc:license; others dropped)",
            keep=("usr/share/openclipart/svg/", "usr/share/doc/openclipart-svg/copyright"),
            license_files=("usr/share/doc/openclipart-svg/copyright",),
        ),
        Source(
            name="openmoji",
            registry="npm",
            package="openmoji",
            version="17.0.0",
            filename="openmoji-17.0.0.tgz",
            sha256="55ee7d13485dec86e9f38c1f3a645a13382d33ff97c0cd845ee824b0aef45e68",
            license="CC-BY-SA-4.0",
            keep=("package/color/svg/", "package/data/openmoji.csv", "package/LICENSE.txt"),
            license_files=("package/LICENSE.txt",),
        ),
        Source(
            name="fluent-emoji",
            registry="npm",
            package="fluentui-emoji",
            version="1.3.0",
            filename="fluentui-emoji-1.3.0.tgz",
            sha256="ec892e607e854859b812c7d827801756adc19955b0ef56d4ae8afcddd19492c5",
            license="MIT",
            keep=("package/icons/flat/", "package/icons/modern/", "package/LICENSE"),
            license_files=("package/LICENSE",),
        ),
        Source(
            name="gcompris",
            registry="debian",
            package="gcompris-qt-data",
            version="3.1-2",
            filename="gcompris-qt-data_3.1-2_all.deb",
            sha256="e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f",
            license="per picture (in-rcc README): public domain, CC0-1.0, CC-BY-2.0/3.0, CC-BY-SA-4.0; "
                    "texts GPL-3.0-or-later",
            keep=tuple(f"{GCOMPRIS_RCC}/{a}.rcc" for a in GCOMPRIS_ACTIVITIES)
            + (GCOMPRIS_QM, "usr/share/doc/gcompris-qt-data/copyright"),
            license_files=("usr/share/doc/gcompris-qt-data/copyright",),
        ),
        Source(
            name="opencc",
            registry="npm",
            package="opencc",
            version="1.4.2",
            filename="opencc-1.4.2.tgz",
            sha256="5b5e89fb0aeb98963892203f3665611816b4c2e22b1131ee74ccba2976de4515",
            license="Apache-2.0",
            keep=("package/data/dictionary/TSCharacters.txt", "package/data/dictionary/TSPhrases.txt",
                  "package/LICENSE"),
            license_files=("package/LICENSE",),
        ),
    )
}

# Audio in the Tux Paint package is most of its size and never used.
_SKIP_SUFFIXES = (".ogg", ".wav")


# The worked example of ``ticor adapt`` (``ticor data icons``): a domain the training data never saw.
ICON_SOURCE = Source(
    name="mdi",
    registry="npm",
    package="@mdi/svg",
    version="7.4.47",
    filename="mdi-svg-7.4.47.tgz",
    sha256="de92e5dc9ce46c392ab5c53aa7190b19f82b40cb48872a083f788c7e13e91fef",
    license="Apache-2.0 (Pictogrammers Free License)",
    keep=("package/svg/", "package/meta.json", "package/LICENSE"),
    license_files=("package/LICENSE",),
)


def downloads_dir(cache: Path | None = None) -> Path:
    return cache_path("downloads", root=cache)


def sources_dir(cache: Path | None = None) -> Path:
    return cache_path("sources", root=cache)


def _download(source: Source, target_dir: Path) -> Path:
    """Run the registry client in a scratch directory and move the file into place."""
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir, prefix=".fetch-") as scratch:
        if source.registry == "debian":
            cmd = ["apt-get", "download", source.spec]
            result = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True)
            if result.returncode != 0 and os.geteuid() == 0:
                # A fresh machine may have no package lists yet.
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
                result = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True)
        else:
            cmd = ["npm", "pack", "--silent", source.spec]
            result = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True)
        if result.returncode != 0:
            raise SourceError(
                f"{' '.join(cmd)} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}\n"
                f"Place {source.filename} (sha256 {source.sha256}) in {target_dir} to build offline."
            )
        produced = Path(scratch) / source.filename
        if not produced.exists():
            found = sorted(p.name for p in Path(scratch).iterdir())
            raise SourceError(f"{' '.join(cmd)} wrote {found}, expected {source.filename}")
        final = target_dir / source.filename
        os.replace(produced, final)
    return final


def fetch(source: Source, cache: Path | None = None) -> Path:
    """Return the verified package file, downloading it only when it is not cached."""
    target = downloads_dir(cache) / source.filename
    if target.exists() and sha256_file(target) == source.sha256:
        return target
    path = _download(source, target.parent)
    actual = sha256_file(path)
    if actual != source.sha256:
        bad = path.with_name(path.name + ".bad")
        os.replace(path, bad)
        raise SourceError(
            f"{source.filename}: sha256 {actual} does not match the pinned {source.sha256} "
            f"(kept as {bad})"
        )
    return path


def _wanted(name: str, source: Source) -> bool:
    name = name.lstrip("./")
    if name.endswith(_SKIP_SUFFIXES):
        return False
    return any(name == k or (k.endswith("/") and name.startswith(k)) for k in source.keep)


def _deb_data_tar(path: Path) -> tarfile.TarFile:
    """Open the data member of a Debian package (an ``ar`` archive) as a tar stream."""
    with path.open("rb") as fh:
        if fh.read(8) != b"!<arch>\n":
            raise SourceError(f"{path.name} is not a Debian package (no ar header)")
        while True:
            header = fh.read(60)
            if len(header) < 60:
                raise SourceError(f"{path.name} has no data.tar member")
            name = header[:16].decode("ascii").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            if name.startswith("data.tar"):
                payload = fh.read(size)
                if name.endswith(".xz"):
                    return tarfile.open(fileobj=io.BytesIO(lzma.decompress(payload)))
                return tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")
            fh.seek(size + (size & 1), os.SEEK_CUR)


def extract(source: Source, cache: Path | None = None) -> Path:
    """Extract the needed members of a verified package; return the extracted root."""
    root = sources_dir(cache) / source.dirname
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == source.sha256:
        return root
    package = fetch(source, cache)
    if root.exists():
        shutil.rmtree(root)
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    archive = _deb_data_tar(package) if source.registry == "debian" else tarfile.open(package)  # noqa: SIM115 - closed by the `with` below
    with archive:
        for member in archive:
            if not (member.isfile() and _wanted(member.name, source)):
                continue
            rel = Path(member.name.lstrip("./"))
            if rel.is_absolute() or ".." in rel.parts:
                raise SourceError(f"{source.filename}: unsafe member path {member.name!r}")
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = archive.extractfile(member)
            if src is None:
                continue
            with src, dest.open("wb") as out:
                shutil.copyfileobj(src, out)
    (tmp / ".complete").write_text(source.sha256)
    os.replace(tmp, root)
    return root


def fetch_all(cache: Path | None = None, log=print) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """Fetch, verify and extract every source; return their extracted roots by name."""
    roots = {}
    for source in SOURCES.values():
        roots[source.name] = extract(source, cache)
        log(f"source {source.name:16s} {source.spec:40s} ok")
    return roots
