"""Real photographs with names and descriptions, from the data of the GCompris educational suite.

Debian's ``gcompris-qt-data`` keeps each activity in a Qt resource file (``rcc``): its pictures,
its boards (QML files whose ``qsTr("...")`` strings name and describe each picture) and a
README with every picture's author, licence and source. Translations are compiled Qt ``.qm``
files that store the English source next to the translation; only Traditional Chinese
(``zh_TW``) carries the photo texts, so the Chinese captions are converted to Simplified with
OpenCC's own phrase and character tables (npm ``opencc``, pinned like every source).

Four kinds of photo come out of it:

- the ``explore`` activities (world animals, farm animals, monuments, world music): a name and
  a paragraph per photo; the caption texts are the name and the paragraph's first sentence,
  in English and Chinese (for the musicians, whose name is a region, a written caption says
  what the photo shows: "musicians playing music in Australia");
- ``categorization`` and ``erase``: photos named by their file (``hammer3``, ``red_panda``);
  the captions are written here for what each photo shows (:data:`LABELS`), in both languages.

Pictures without a licence record, with a licence that is not public domain, CC0, CC-BY or
CC-BY-SA, or named only by a number (``monument2``) are left out with the reason. Everything is
read with the standard library: the rcc and qm readers are below.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

from ticor.dataset.catalog import Concept, Credit, Skipped, Text, head_noun, noun_key
from ticor.dataset.render import RenderJob
from ticor.dataset.sources import GCOMPRIS_ACTIVITIES, GCOMPRIS_QM, GCOMPRIS_RCC
from ticor.errors import SourceError

RCC_DIR, QM_ZH_TW, ACTIVITIES = GCOMPRIS_RCC, GCOMPRIS_QM, GCOMPRIS_ACTIVITIES
ACTIVITY_DIR = "gcompris/src/activities"
UNPACK_VERSION = 1

# Captions written for what the photos named only by their file show: file stem without its
# number -> (English, Simplified Chinese). A stem missing here is left out ("no caption").
LABELS: dict[str, tuple[str, str]] = {
    # categorization/monuments
    "IndiaGate": ("India Gate in New Delhi", "新德里的印度门"),
    "arcDeTriomphe": ("Arc de Triomphe du Carrousel in Paris", "巴黎卡鲁索凯旋门"),
    "bayterek": ("Bayterek Tower in Astana", "阿斯塔纳的巴伊捷列克塔"),
    "brandenburgGate": ("Brandenburg Gate in Berlin", "柏林勃兰登堡门"),
    "burj": ("Burj Khalifa skyscraper in Dubai", "迪拜哈利法塔摩天大楼"),
    "cathedral": ("Cathedral of Santiago de Compostela", "圣地亚哥-德孔波斯特拉主教座堂"),
    "christTheRedeemer": ("Christ the Redeemer statue in Rio de Janeiro", "里约热内卢的救世基督像"),
    "colosseum": ("Colosseum in Rome", "罗马斗兽场"),
    "eiffelTower": ("Eiffel Tower in Paris", "巴黎埃菲尔铁塔"),
    "empireState": ("Empire State Building in New York", "纽约帝国大厦"),
    "greatPyramid": ("Great Pyramid of Giza", "吉萨大金字塔"),
    "greatWall": ("Great Wall of China", "中国长城"),
    "jucheTower": ("Juche Tower in Pyongyang", "平壤主体思想塔"),
    "kutubMinar": ("Qutub Minar tower in Delhi", "德里的顾特卜塔"),
    "leaningTowerOfPisa": ("Leaning Tower of Pisa", "比萨斜塔"),
    "mountRushmore": ("Mount Rushmore", "拉什莫尔山"),
    "operaHouse": ("Sydney Opera House", "悉尼歌剧院"),
    "parthenon": ("Parthenon in Athens", "雅典帕特农神庙"),
    "statueOfLiberty": ("Statue of Liberty in New York", "纽约自由女神像"),
    "tajMahal": ("Taj Mahal in Agra", "阿格拉的泰姬陵"),
    "usCapitol": ("United States Capitol in Washington", "华盛顿美国国会大厦"),
    "victoriaMemorial": ("Victoria Memorial in Kolkata", "加尔各答维多利亚纪念堂"),
    "zimniPalace": ("Winter Palace in Saint Petersburg", "圣彼得堡冬宫"),
    # categorization/others
    "baseball": ("a baseball", "一个棒球"),
    "blackslate": ("a black slate", "一块黑色石板"),
    "bucket": ("a bucket", "一个水桶"),
    "buffetset": ("a buffet set of serving dishes", "一套自助餐餐具"),
    "bulb": ("a light bulb", "一个灯泡"),
    "chair": ("a chair", "一把椅子"),
    "cup": ("a cup", "一个杯子"),
    "erasers": ("erasers", "橡皮擦"),
    "igloo": ("an igloo", "一座冰屋"),
    "knife": ("a knife", "一把刀"),
    "pan": ("a frying pan", "一个平底锅"),
    "pencil": ("a pencil", "一支铅笔"),
    "pillow": ("a pillow", "一个枕头"),
    "plate": ("a plate", "一个盘子"),
    "spoons": ("spoons", "勺子"),
    "volleyball": ("a volleyball", "一个排球"),
    "weighingMachine": ("a weighing scale", "一台秤"),
    # categorization/renewable
    "dam": ("a hydroelectric dam", "水力发电大坝"),
    "geothermal": ("a geothermal power plant", "地热发电站"),
    "solar": ("solar panels", "太阳能电池板"),
    "windmill": ("wind turbines", "风力发电机"),
    # categorization/tools
    "cuttingTool": ("a cutting tool", "一把切割工具"),
    "hammer": ("a hammer", "一把锤子"),
    "measuringTape": ("a measuring tape", "一个卷尺"),
    "multimeter": ("a multimeter", "一个万用表"),
    "nailCutter": ("a nail clipper", "一个指甲刀"),
    "plier": ("pliers", "一把钳子"),
    "scissors": ("scissors", "一把剪刀"),
    "screwDriver": ("a screwdriver", "一把螺丝刀"),
    "sickle": ("a sickle", "一把镰刀"),
    "sideCutter": ("side cutting pliers", "一把斜口钳"),
    "spray": ("a spray bottle", "一个喷雾瓶"),
    "tweezer": ("tweezers", "一把镊子"),
    "wrench": ("a wrench", "一把扳手"),
    # categorization/fishes
    "fish": ("a fish", "一条鱼"),
    # erase
    "alpaca": ("an alpaca", "一只羊驼"),
    "bee": ("a bee on a flower", "花上的一只蜜蜂"),
    "butterfly": ("a butterfly", "一只蝴蝶"),
    "calf": ("a calf", "一头小牛"),
    "camels": ("camels", "骆驼"),
    "caterpillar": ("a caterpillar", "一条毛毛虫"),
    "chamaeleon": ("a chameleon", "一只变色龙"),
    "cheetah": ("a cheetah", "一只猎豹"),
    "crab": ("a crab", "一只螃蟹"),
    "dolphin": ("a dolphin", "一只海豚"),
    "flying_fox": ("a flying fox bat", "一只狐蝠"),
    "gibbon": ("a gibbon", "一只长臂猿"),
    "giraffe": ("a giraffe", "一只长颈鹿"),
    "goat": ("a goat", "一只山羊"),
    "gorilla": ("a gorilla", "一只大猩猩"),
    "gosling": ("a gosling", "一只小鹅"),
    "heron": ("a heron", "一只鹭"),
    "horse": ("a horse", "一匹马"),
    "kingfisher": ("a kingfisher", "一只翠鸟"),
    "kitten": ("a kitten", "一只小猫"),
    "long_nosed_monkey": ("a proboscis monkey", "一只长鼻猴"),
    "macaque": ("a macaque monkey", "一只猕猴"),
    "meerkats": ("meerkats", "狐獴"),
    "northern_harrier": ("a northern harrier hawk", "一只白尾鹞"),
    "nubian_ibex": ("a Nubian ibex", "一只努比亚羱羊"),
    "penguin": ("a penguin", "一只企鹅"),
    "pika": ("a pika", "一只鼠兔"),
    "red_panda": ("a red panda", "一只小熊猫"),
    "rhinoceros": ("a rhinoceros", "一头犀牛"),
    "spoonbills": ("spoonbills", "琵鹭"),
    "squirrel": ("a squirrel", "一只松鼠"),
    "swans": ("swans", "天鹅"),
    "toucan": ("a toucan", "一只巨嘴鸟"),
}
LICENCES = {"public domain": "public-domain", "cc0-1.0": "CC0-1.0", "cc-by 2.0": "CC-BY-2.0",
            "cc-by-2.0": "CC-BY-2.0", "cc-by 3.0": "CC-BY-3.0", "cc-by-3.0": "CC-BY-3.0",
            "cc-by-sa 4.0": "CC-BY-SA-4.0", "cc-by-sa-4.0": "CC-BY-SA-4.0"}
MAX_SENTENCE_WORDS = 30


# ---------------------------------------------------------------- Qt resource and translation files


def read_rcc(data: bytes) -> dict[str, bytes]:
    """Every file in a Qt resource file (format 1-3; stored or zlib-compressed entries)."""
    if data[:4] != b"qres" or len(data) < 20:
        raise SourceError("not a Qt resource file (no 'qres' header)")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    if version not in (1, 2, 3):
        raise SourceError(f"Qt resource format {version} is not supported")
    node = 14 if version == 1 else 22

    def name(off: int) -> str:
        (n,) = struct.unpack(">H", data[names + off : names + off + 2])
        return data[names + off + 6 : names + off + 6 + 2 * n].decode("utf-16-be")

    out: dict[str, bytes] = {}
    stack = [(0, "")]
    while stack:
        i, path = stack.pop()
        base = tree + i * node
        flags = struct.unpack(">H", data[base + 4 : base + 6])[0]
        if flags & 2:  # a directory: child count and first child
            count, first = struct.unpack(">II", data[base + 6 : base + 14])
            for c in range(first, first + count):
                child = name(struct.unpack(">I", data[tree + c * node : tree + c * node + 4])[0])
                stack.append((c, f"{path}/{child}" if path else child))
            continue
        (off,) = struct.unpack(">I", data[base + 10 : base + 14])
        (size,) = struct.unpack(">I", data[payload + off : payload + off + 4])
        blob = data[payload + off + 4 : payload + off + 4 + size]
        if flags & 4:
            raise SourceError(f"{path}: zstd-compressed Qt resources are not supported")
        out[path] = zlib.decompress(blob[4:]) if flags & 1 else blob
    return out


_QM_MAGIC = bytes.fromhex("3CB86418CAEF9C95CD211CBF60A1BDDD")


def read_qm(data: bytes) -> dict[str, str]:
    """English source text -> translation, from a compiled Qt translation file."""
    if data[:16] != _QM_MAGIC:
        raise SourceError("not a Qt translation file")
    pos, messages = 16, b""
    while pos + 5 <= len(data):
        tag, n = data[pos], struct.unpack(">I", data[pos + 1 : pos + 5])[0]
        if tag == 0x69:
            messages = data[pos + 5 : pos + 5 + n]
        pos += 5 + n
    out: dict[str, str] = {}
    i, source, translations = 0, None, []
    while i < len(messages):
        tag = messages[i]
        i += 1
        if tag == 1:  # end of a message
            if source is not None and translations and translations[0]:
                out.setdefault(source, translations[0])
            source, translations = None, []
            continue
        if tag == 5:  # obsolete marker, no payload
            continue
        (n,) = struct.unpack(">I", messages[i : i + 4])
        n = 0 if n == 0xFFFFFFFF else n
        body = messages[i + 4 : i + 4 + n]
        i += 4 + n
        if tag == 3:
            translations.append(body.decode("utf-16-be"))
        elif tag == 6:
            source = body.decode("utf-8")
    return out


class Simplifier:
    """Traditional -> Simplified Chinese with OpenCC's tables: longest phrase first, then characters."""

    def __init__(self, opencc_root: Path) -> None:
        folder = opencc_root / "package/data/dictionary"
        self.phrases = self._table(folder / "TSPhrases.txt")
        self.chars = self._table(folder / "TSCharacters.txt")
        self.longest = max(len(k) for k in self.phrases)

    @staticmethod
    def _table(path: Path) -> dict[str, str]:
        table = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#") and "\t" in line:
                key, values = line.split("\t", 1)
                table[key] = values.split(" ")[0]
        return table

    def __call__(self, text: str) -> str:
        out, i = [], 0
        while i < len(text):
            for n in range(min(self.longest, len(text) - i), 1, -1):
                if text[i : i + n] in self.phrases:
                    out.append(self.phrases[text[i : i + n]])
                    i += n
                    break
            else:
                out.append(self.chars.get(text[i], text[i]))
                i += 1
        return "".join(out)


# ---------------------------------------------------------------- boards and credits


_QSTR = r'qsTr\("((?:[^"\\]|\\.)*)"\)'


def credits(readme: str) -> dict[str, Credit]:
    """File name -> credit, from an in-rcc README (blocks of ``Key: value`` lines, ``Files:``
    either inline or one per following line)."""
    out: dict[str, Credit] = {}
    for block in re.split(r"\n\s*\n", readme):
        fields: dict[str, str] = {}
        files: list[str] = []
        in_files = False
        for line in block.splitlines():
            m = re.match(r"^(Copyright|License|Source|Comments|Files):\s*(.*)$", line.strip())
            if m:
                in_files = m.group(1) == "Files"
                if in_files:
                    files += m.group(2).split()
                else:
                    fields[m.group(1)] = m.group(2).strip()
            elif in_files and line.strip():
                files += line.split()
        licence = LICENCES.get(fields.get("License", "").lower())
        for f in files:
            out[Path(f).name] = Credit(fields.get("Copyright", ""), licence or "", fields.get("Source", ""))
    return out


def _unquote(s: str) -> str:
    return s.replace('\\"', '"').replace("\\'", "'").replace("\\n", " ")


def first_sentence(text: str) -> str:
    """The paragraph's first sentence, cut at a word boundary when it is very long."""
    m = re.match(r"(.+?[.!?])(\s|$)", text.strip())
    sentence = m.group(1) if m else text.strip()
    words = sentence.split()
    return sentence if len(words) <= MAX_SENTENCE_WORDS else " ".join(words[:MAX_SENTENCE_WORDS])


def board_entries(qml: str) -> list[dict[str, str]]:
    """``{"title", "text", "image2"}`` of each photo entry of an explore board."""
    entries = []
    for block in re.findall(r"\{[^{}]*\}", qml):
        image = re.search(r'"image2"\s*:\s*"qrc:/([^"]+)"', block)
        title = re.search(r'"title"\s*:\s*' + _QSTR, block)
        if image and title:
            text = re.search(r'"text"\s*:\s*' + _QSTR, block)
            entries.append({"image2": image.group(1), "title": _unquote(title.group(1)),
                            "text": _unquote(text.group(1)) if text else ""})
    return entries


def _zh(translations: dict[str, str], english: str, simplify: Simplifier) -> str:
    """The Simplified Chinese translation of an English string, without a Latin gloss in brackets."""
    zh = translations.get(english, "")
    zh = re.sub(r"[（(][^（）()]*[A-Za-z][^（）()]*[）)]", "", zh).strip()
    return simplify(zh) if re.search(r"[\u4e00-\u9fff]", zh) else ""


# ---------------------------------------------------------------- concepts


def unpack(root: Path) -> Path:
    """Every needed rcc file unpacked under ``root/unpacked`` (once; a marker records completion)."""
    out = root / "unpacked"
    marker = out / ".complete"
    if marker.is_file() and marker.read_text() == str(UNPACK_VERSION):
        return out
    for activity in ACTIVITIES:
        for rel, blob in read_rcc((root / RCC_DIR / f"{activity}.rcc").read_bytes()).items():
            path = out / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise SourceError(f"{activity}.rcc: unsafe member path {rel!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
    marker.write_text(str(UNPACK_VERSION))
    return out


def photo_concepts(roots: dict[str, Path], skipped: list[Skipped]) -> tuple[list[Concept], dict[str, Credit]]:
    """The photo concepts, and the credit of every picture they use (keyed by render-job key)."""
    base = unpack(roots["gcompris"])
    translations = read_qm((roots["gcompris"] / QM_ZH_TW).read_bytes())
    simplify = Simplifier(roots["opencc"])
    acts = base / ACTIVITY_DIR
    credit_of: dict[str, Credit] = {}
    for readme in sorted(acts.rglob("README")):
        for name, c in credits(readme.read_text(encoding="utf-8", errors="replace")).items():
            credit_of[f"{readme.parent.relative_to(base)}/{name}"] = c
    def credit(rel: str) -> Credit | None:
        for folder in (Path(rel).parent, Path(rel).parent.parent):
            c = credit_of.get(f"{folder}/{Path(rel).name}")
            if c is not None:
                return c
        return None

    concepts: dict[str, Concept] = {}
    used: dict[str, Credit] = {}

    def add(key: str, hard: str, rel: str, texts: list[Text]) -> None:
        c = credit(rel)
        if c is None:
            skipped.append(Skipped("gcompris", rel, "no licence record"))
            return
        if not c.license:
            skipped.append(Skipped("gcompris", rel, "licence not public domain, CC0, CC-BY or CC-BY-SA"))
            return
        job_key = f"gcompris:{rel}"
        used[job_key] = c
        english = texts[0].text
        concept = concepts.get(key)
        if concept is None:  # its own seed: concepts sharing a seed are look-alike siblings, each
            # other's hard negatives; photos of one thing are merged by their nouns instead, never negatives
            concept = concepts[key] = Concept(
                key=key, family="photo", seed=key, hard_keys=(hard,),
                nouns=(noun_key(english),), head=head_noun(english), texts=texts)
        concept.jobs.append(("gcompris", RenderJob(job_key, "photo", str(base / rel))))

    for activity in ACTIVITIES[:4]:
        for board in sorted((acts / activity / "resource/board").glob("board*.qml")):
            for e in board_entries(board.read_text(encoding="utf-8")):
                rel = e["image2"]
                title, sentence = e["title"], first_sentence(e["text"]) if e["text"] else ""
                if activity == "explore_world_music":
                    zh_region = _zh(translations, title, simplify)
                    what = f"musicians playing {title}" if title.endswith("Music") else (
                        f"musicians playing music in {title}")
                    texts = [Text("en", "name", what)]
                    if zh_region:
                        texts.append(Text("zh", "name", f"{zh_region}的音乐家在演奏"))
                else:
                    texts = [Text("en", "name", title)]
                    zh = _zh(translations, title, simplify)
                    if zh:
                        texts.append(Text("zh", "name", zh))
                if sentence:
                    texts.append(Text("en", "sentence", sentence))
                    zh_text = _zh(translations, e["text"], simplify)
                    if zh_text:
                        zh_first = re.match(r"(.+?[。！？])", zh_text)
                        texts.append(Text("zh", "sentence", zh_first.group(1) if zh_first else zh_text))
                add(f"photo:{activity}:{Path(rel).stem}", f"photo-board:{activity}:{Path(rel).parent.name}",
                    rel, texts)
    for activity, folder in (("categorization", "categorization/resource/images"), ("erase", "erase/resource")):
        for path in sorted((acts / folder).rglob("*.webp")):
            rel = str(path.relative_to(base))
            stem = re.sub(r"\d+$", "", path.stem)
            if stem not in LABELS:
                skipped.append(Skipped("gcompris", rel, "no caption (named only by its file)"))
                continue
            en, zh = LABELS[stem]
            add(f"photo:{activity}:{stem}", f"photo-folder:{activity}:{path.parent.name}", rel,
                [Text("en", "name", en), Text("zh", "name", zh)])
    return sorted(concepts.values(), key=lambda c: c.key), used
