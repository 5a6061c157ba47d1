"""Real photographs at camera size, for the picture-path tests and benchmarks (never training).

Source: the photographs among KDE's wallpapers, Debian ``plasma-workspace-wallpapers`` (pinned
and sha256-checked like the dataset sources, fetched by ``ticor data fetch``, never committed).
Eleven are 2560x1600 JPEGs (LGPL-3, per the package's ``metadata.json``), one is 5120x2880
(``Volna``, CC-BY-SA-4.0). The other wallpapers are digital art and are left out.

:func:`camera_set` turns them into what phones and cameras write: 12-megapixel JPEGs
(4032x3024, centre-cropped to 4:3 and resized with Lanczos, so generated from real photos),
~4K PNGs (3840x2160), an EXIF-rotated JPEG, a CMYK JPEG, a truncated JPEG and, when the
``heif`` extra is installed, HEIC files. Each file is written once into the cache folder and
reused; the set is deterministic.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from ticor.dataset.sources import Source, extract
from ticor.paths import cache_path

WALLPAPERS = Source(
    name="kde-wallpapers",
    registry="debian",
    package="plasma-workspace-wallpapers",
    version="4:5.27.5-2",
    filename="plasma-workspace-wallpapers_4%3a5.27.5-2_all.deb",
    sha256="32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b",
    license="LGPL-3 (11 photographs), CC-BY-SA-4.0 (Volna), per usr/share/wallpapers/*/metadata.json",
    keep=tuple(f"usr/share/wallpapers/{d}/" for d in (
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
        "OneStandsOut", "Path", "summer_1am", "Volna")) + ("usr/share/doc/plasma-workspace-wallpapers/copyright",),
    license_files=("usr/share/doc/plasma-workspace-wallpapers/copyright",),
)


@dataclass(frozen=True)
class Photo:
    name: str  # the wallpaper's folder
    file: str  # the largest picture in it, relative to the extracted package
    sha256: str
    license: str
    author: str


PHOTOS = (
    Photo("BytheWater", "2560x1600.jpg", "c272434ef39f2abf1ed48a15a8910088020f3165329a5092f3940ec9464bc05f",
          "LGPL-3", "Maciej Wiklo"),
    Photo("ColdRipple", "2560x1600.jpg", "05bef6722fc0ed81292cceb3ed026c38d17e510f3c84be7d68610c2b1a723c3f",
          "LGPL-3", "Risto Saukonpää"),
    Photo("ColorfulCups", "2560x1600.jpg", "6e0f3a72feb5a4a9fec191b77e34874c3c69e2d93040deb3f07773e73385023d",
          "LGPL-3", "Dmitri Popov"),
    Photo("DarkestHour", "2560x1600.jpg", "8e3703fae3a3c217b1fc2b399b706cd3720584268d071ba153e4809daa55f1ce",
          "LGPL-3", "Risto Saukonpää"),
    Photo("EveningGlow", "2560x1600.jpg", "586682dcb362b9f620068f10138f87d0d3649939aef238adc5807cb951976a7a",
          "LGPL-3", "Ian Hex"),
    Photo("FallenLeaf", "2560x1600.jpg", "95603a6560c7e8d50e0e03b3f4adbe39c5258c72528e74e4ecaea1daf4e499de",
          "LGPL-3", "Martin Klapetek"),
    Photo("Grey", "2560x1600.jpg", "88c31d8944b7e6935d1b9a296654c692f0772cb512491713eb30a972a604c0ed",
          "LGPL-3", "Sigi Sagi"),
    Photo("Kite", "2560x1600.jpg", "bdca288ce296a981e80659c021cf707caddc702c0c8d4247e60bd618476d47f8",
          "LGPL-3", "Risto Saukonpää"),
    Photo("OneStandsOut", "2560x1600.jpg", "cb507baf1dafdcae362264f3aba9483ed4be5f6c9fdd770f0ec0920c6d9e80fd",
          "LGPL-3", "Risto Saukonpää"),
    Photo("Path", "2560x1600.jpg", "7477457d7f17b736259f1b021864778ad4ba802cf3214e6728181ff29126bba8",
          "LGPL-3", "Risto Saukonpää"),
    Photo("summer_1am", "2560x1600.jpg", "c868b50789591dd42910153c768053f1ba0a98cb36bbfc2b7a96a1045d0477f8",
          "LGPL-3", "Risto Saukonpää"),
    Photo("Volna", "5120x2880.jpg", "abc30b4fc6f6a83b6156e6b59ac283c067de40af820aafac8ac7c4fd83a9607c",
          "CC-BY-SA-4.0", "Nikita Babin"),
)

CAMERA = (4032, 3024)  # a 12-megapixel phone photo
UHD = (3840, 2160)
SET_VERSION = 1


def photo_paths(cache: Path | None = None) -> list[Path]:
    """The original photographs, extracted and each checked against its pinned sha256."""
    from ticor._files import sha256_file
    from ticor.errors import HashMismatchError

    root = extract(WALLPAPERS, cache)
    paths = []
    for p in PHOTOS:
        path = root / "usr/share/wallpapers" / p.name / "contents/images" / p.file
        got = sha256_file(path)
        if got != p.sha256:
            raise HashMismatchError(path, p.sha256, got)
        paths.append(path)
    return paths


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the aspect of ``size``, then Lanczos to it."""
    w, h = image.size
    want = size[0] / size[1]
    if w / h > want:
        cw, ch = round(h * want), h
    else:
        cw, ch = w, round(w / want)
    box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
    return image.resize(size, Image.Resampling.LANCZOS, box=box)


def _exif(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "ticor test camera"  # Make
    exif[0x0110] = "generated from a real photograph"  # Model
    exif[0x0112] = orientation
    return exif.tobytes()


def camera_set(out: Path | None = None, cache: Path | None = None) -> dict[str, list[Path]]:
    """Camera-size variants of every photograph, by kind: ``jpeg`` (12 MP), ``png`` (~4K),
    ``heic`` (12 MP, only with the ``heif`` extra), ``rotated`` (12 MP JPEG stored turned a
    quarter counter-clockwise, with EXIF orientation 6), ``cmyk`` (12 MP CMYK JPEG) and ``truncated`` (a 12 MP JPEG
    cut at 60%). Files are made once under ``CACHE/photos/camera-vN`` (or ``out``)."""
    out = out if out is not None else cache_path("photos", f"camera-v{SET_VERSION}", root=cache)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        heif = True
    except ImportError:
        heif = False
    kinds: dict[str, list[Path]] = {k: [] for k in ("jpeg", "png", "heic", "rotated", "cmyk", "truncated")}
    for photo, path in zip(PHOTOS, photo_paths(cache)):
        wanted = {"jpeg": out / f"{photo.name}-12mp.jpg", "png": out / f"{photo.name}-4k.png",
                  "rotated": out / f"{photo.name}-12mp-rotated.jpg", "cmyk": out / f"{photo.name}-12mp-cmyk.jpg",
                  "truncated": out / f"{photo.name}-12mp-truncated.jpg"}
        if heif:
            wanted["heic"] = out / f"{photo.name}-12mp.heic"
        if not all(p.is_file() for p in wanted.values()):
            _make(path, wanted)
        for kind, p in wanted.items():
            kinds[kind].append(p)
    return kinds


def _make(path: Path, wanted: dict[str, Path]) -> None:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    cam = _fit(rgb, CAMERA)
    _save(wanted["jpeg"], lambda f: cam.save(f, "JPEG", quality=92, exif=_exif()))
    _save(wanted["png"], lambda f: _fit(rgb, UHD).save(f, "PNG", compress_level=1))
    # stored turned a quarter counter-clockwise; orientation 6 tells a viewer to turn it back
    _save(wanted["rotated"], lambda f: cam.transpose(Image.Transpose.ROTATE_90).save(
        f, "JPEG", quality=92, exif=_exif(6)))
    _save(wanted["cmyk"], lambda f: cam.convert("CMYK").save(f, "JPEG", quality=92))
    buf = io.BytesIO()
    cam.save(buf, "JPEG", quality=92)
    _save(wanted["truncated"], lambda f: f.write(buf.getvalue()[: len(buf.getvalue()) * 6 // 10]))
    if "heic" in wanted:
        _save(wanted["heic"], lambda f: cam.save(f, "HEIF", quality=90))


def _save(path: Path, write: Callable[[BinaryIO], object]) -> None:
    if path.is_file():
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        write(f)
    tmp.replace(path)
