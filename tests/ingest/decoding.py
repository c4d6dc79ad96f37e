"""A whole file through one StreamDecoder, as ingest's pipeline feeds it, for tests."""

from __future__ import annotations

from pathlib import Path

import av

from services.ingest.decode import StreamDecoder
from services.ingest.deferred import complete


def decode_file(dec: StreamDecoder, path: Path) -> list:
    """Every item `dec` makes of the file at `path` (frames, chunks, records), in order."""
    items = []
    with av.open(str(path)) as container:
        dec.attach(container)
        for packet in container.demux(*dec.streams):
            dec.process(packet)
            items += complete(dec.take())
        dec.finish()
        items += complete(dec.take())
    return items
