"""Write streamsight.natsauth's users and permissions into the deployed NATS configurations.

deploy/nats/nats.conf (docker compose) and the `nats-config` ConfigMap of deploy/k8s/01-nats.yaml
carry the same `authorization { ... }` block, `natsauth.deployed_authorization()` with passwords
from the environment; tests/platform/test_deploy_parity.py checks that they match it. After a
change to natsauth (a service's subjects or KV buckets), run

    .venv/bin/python deploy/nats/sync_authorization.py

and commit both files. `--check` only says whether they are current (exit 1 when not).
"""

from __future__ import annotations

import sys
from pathlib import Path

from streamsight import natsauth
from streamsight.config import SECTIONS

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "deploy" / "nats" / "nats.conf", REPO / "deploy" / "k8s" / "01-nats.yaml"]
USERS = [natsauth.ADMIN, natsauth.READER, *SECTIONS]


def replace_block(text: str, block: str) -> str:
    """`text` with its `authorization { ... }` block (at any indent) replaced by `block`, indented alike."""
    start = text.index("authorization {")
    line_start = text.rindex("\n", 0, start) + 1
    indent = text[line_start:start]
    end = text.index("\n" + indent + "}", start) + len(indent) + 2
    body = "\n".join(indent + line if line else line for line in block.splitlines())
    return text[:line_start] + body + text[end:]


def main(argv: list[str]) -> int:
    block = natsauth.deployed_authorization(USERS)
    stale = []
    for path in FILES:
        text = path.read_text()
        new = replace_block(text, block)
        if new != text:
            stale.append(path)
            if "--check" not in argv:
                path.write_text(new)
    for path in stale:
        print(f"{path.relative_to(REPO)}: {'stale' if '--check' in argv else 'updated'}")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
