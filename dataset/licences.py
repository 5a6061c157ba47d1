"""What the sources' licences ask of a built dataset: their texts beside it, and ATTRIBUTION.md."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ticor.dataset import catalog
from ticor.dataset.catalog import Credit
from ticor.dataset.sources import SOURCES, Source, sha256_file


def write_licenses(out: Path, roots: dict[str, Path], used: set[str]) -> dict[str, str]:
    target = out / "licenses"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    shipped = {}
    for name in sorted(used):
        src: Source = SOURCES[name]
        for rel in src.license_files:
            dest = target / f"{name}-{Path(rel).name}"
            shutil.copyfile(roots[name] / rel, dest)
            shipped[dest.name] = sha256_file(dest)
    gpl = Path("/usr/share/common-licenses/GPL-2")
    if "tuxpaint-stamps" in used and gpl.exists():
        shutil.copyfile(gpl, target / "GPL-2")
        shipped["GPL-2"] = sha256_file(target / "GPL-2")
    return shipped


def attribution(counts: Counter, photos: Sequence[tuple[str, str, Credit]] = ()) -> str:
    """The attribution file: a table of sources, their notices, and one line per photograph
    (``photos``: path in the package, picture sha256, credit)."""
    lines = [
        "# Attribution",
        "",
        "The pictures and texts in this dataset come from the packages below, under their own",
        "licenses; the license files are in `licenses/`. Pictures are re-rendered (cropped,",
        "padded, resized, composited on white); texts are unchanged.",
        "",
        "| image source | package | license | pictures here |",
        "|---|---|---|---|",
    ]
    for source in sorted(counts):
        pkg = SOURCES[catalog.IMAGE_SOURCE_PACKAGE[source]]
        lines.append(
            f"| {source} | {pkg.registry} `{pkg.spec}` | {catalog.LICENSES[source]} | {counts[source]} |"
        )
    cldr = SOURCES["cldr"]
    lines += [
        f"| (texts) | {cldr.registry} `{cldr.spec}` | {cldr.license} | – |",
        "",
        "- **OpenMoji** – the open-source emoji and icon project, https://openmoji.org, "
        "License: CC BY-SA 4.0. The rendered OpenMoji pictures are adaptations under the same "
        "license.",
        "- **Tux Paint stamps** – © the Tux Paint developers and stamp authors (see "
        "`licenses/tuxpaint-stamps-copyright`), GPL-2.0-or-later; the full license text is "
        "`licenses/GPL-2`. Descriptions and their Chinese translations come from the same package.",
        "- **Noto Color Emoji** – © Google, SIL Open Font License 1.1.",
        "- **Fluent Emoji** – © Microsoft, MIT License (npm repackaging `fluentui-emoji`).",
        "- **Openclipart** – only drawings whose metadata dedicates them to the public domain.",
        "- **Unicode CLDR** – emoji names and keywords, Unicode License (DFS-2016).",
        "",
    ]
    if photos:
        lines += [
            "## Photographs",
            "",
            "From the data of the GCompris educational suite (Debian `gcompris-qt-data`), padded to a",
            "square and resized. Each photograph's author, licence and original, as the package's own",
            "README files record them. The English and Chinese names and description sentences of the",
            "explore activities are GCompris' texts (Chinese converted from Traditional to Simplified",
            "with OpenCC's tables); the captions of the categorization and erase photos, and of the",
            "musicians, were written for this dataset to say what each photo shows.",
            "",
            "| picture | in the package | author | licence | original |",
            "|---|---|---|---|---|",
        ]
        for ref, digest, credit in photos:
            author = credit.author.replace("|", "/")
            lines.append(f"| `{digest[:12]}` | `{ref}` | {author} | {credit.license} | {credit.source} |")
        lines.append("")
    return "\n".join(lines)
