"""Every shipped vision model matches the sha256 written in its card (MODEL.md)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

MODELS = Path(__file__).resolve().parents[2] / "services" / "vision" / "models"
CARD_LINE = re.compile(r"`([\w.]+\.onnx)` sha256: `([0-9a-f]{64})`")


def test_every_model_has_a_matching_card_entry():
    card = (MODELS / "MODEL.md").read_text()
    listed = dict(CARD_LINE.findall(card))
    shipped = {p.name for p in MODELS.glob("*.onnx")}
    assert shipped == {"flow.onnx", "motion_cnn.onnx", "frame_cnn.onnx"}
    assert set(listed) == shipped
    for name, digest in listed.items():
        assert hashlib.sha256((MODELS / name).read_bytes()).hexdigest() == digest, f"{name} differs from its card"
