"""The protos follow the conventions and the committed stubs are up to date."""

from __future__ import annotations

import re

from streamsight import protogen


def test_committed_stubs_are_fresh(tmp_path):
    fresh = {p.relative_to(tmp_path): p.read_text() for p in protogen.generate(tmp_path)}
    committed = {p.relative_to(protogen.GEN_DIR): p.read_text() for p in protogen.GEN_DIR.rglob("*.py*") if "__pycache__" not in p.parts}
    stale = sorted(str(k) for k in fresh if committed.get(k) != fresh[k])
    extra = sorted(str(k) for k in committed.keys() - fresh.keys())
    assert not stale and not extra, f"stubs are stale, run `make proto`: changed {stale}, left over {extra}"


def _declarations(text: str):
    """(line number, line) of every message, enum, enum value, field and rpc."""
    decl = re.compile(r"^\s*(message \w+|enum \w+|service \w+|rpc \w+|(repeated |optional )?[\w.<>, ]+ \w+ = \d+;|\w+ = \d+;)")
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if decl.match(line) and not line.strip().startswith(("//", "syntax", "package", "import", "option")):
            yield i, lines


def test_every_declaration_has_a_comment():
    missing = []
    for proto in protogen.proto_files():
        for i, lines in _declarations(proto.read_text()):
            if not lines[i - 1].strip().startswith("//"):
                missing.append(f"{proto.name}:{i + 1}: {lines[i].strip()}")
    assert protogen.proto_files(), "no protos found"
    assert not missing, "declarations without a comment:\n" + "\n".join(missing)


def test_packages_are_versioned_and_enums_start_unspecified():
    for proto in protogen.proto_files():
        text = proto.read_text()
        assert re.search(r"^package streamsight\.\w+\.v\d+;", text, re.M), f"{proto.name} lacks a versioned package"
        for enum, body in re.findall(r"enum (\w+) \{(.*?)\}", text, re.S):
            first = re.search(r"(\w+) = (\d+);", body)
            assert first and first.group(2) == "0" and first.group(1).endswith("_UNSPECIFIED"), f"{proto.name}: {enum} must start with *_UNSPECIFIED = 0"
