"""AudioSet class lists of the supported taggers and matching of configured class names.

`audioset_labels.json` holds the 527 AudioSet classes in the order of
class_labels_indices.csv (the output order of the PANNs checkpoints);
`yamnet_labels.json` the 521 classes of YAMNet's class map (AudioSet without six
classes). Both files name their source.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent
LABEL_FILES = {"panns": _HERE / "audioset_labels.json", "yamnet": _HERE / "yamnet_labels.json"}
EXPECTED_COUNTS = {"panns": 527, "yamnet": 521}


@dataclass(frozen=True)
class Label:
    index: int
    mid: str
    name: str


@cache
def labels_for(kind: str) -> tuple[Label, ...]:
    """The class list of a tagger kind ('panns': 527 AudioSet classes, 'yamnet': 521)."""
    if kind not in LABEL_FILES:
        raise ValueError(f"unknown tagger kind {kind!r}; known: {sorted(LABEL_FILES)}")
    data = json.loads(LABEL_FILES[kind].read_text(encoding="utf-8"))
    labels = tuple(Label(int(e["index"]), e["mid"], e["name"]) for e in data["labels"])
    if len(labels) != EXPECTED_COUNTS[kind] or [l.index for l in labels] != list(range(len(labels))):
        raise RuntimeError(f"{LABEL_FILES[kind].name} is damaged: {len(labels)} labels")
    return labels


def slug(name: str) -> str:
    """Feature-name form of a class name: 'Gunshot, gunfire' -> 'gunshot_gunfire'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def find_label(labels: tuple[Label, ...], wanted: str) -> Label | None:
    """The label whose display name, first name before a comma, or mid equals `wanted`.

    Case and punctuation are ignored, and '/' reads as ',' ('Gunshot/gunfire' finds
    'Gunshot, gunfire'; 'Male speech' finds 'Male speech, man speaking').
    """
    key = slug(wanted.replace("/", ","))
    for label in labels:
        if wanted == label.mid or key == slug(label.name):
            return label
    for label in labels:
        if key == slug(label.name.split(",")[0]):
            return label
    return None
