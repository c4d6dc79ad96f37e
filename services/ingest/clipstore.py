"""Where exported clips are kept: the service's local folder, or a JetStream object store bucket.

Both stores take a clip file just cut into the stream's clip folder and say where it now is:

* ``local`` keeps the file where it is; its ClipRef uri is a ``file://`` URI.
* ``nats`` uploads it to the object store bucket (``clips`` by default) under the name
  ``<stream>/<file name>`` and deletes the local copy; the uri is
  ``nats-object://<bucket>/<stream>/<clip_id>.mp4``. Any service instance, or any backend with
  NATS access, can read it from there; ReadClip downloads it (digest-checked by nats-py) into
  a temporary file and streams that.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import AsyncIterator, Protocol

from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

CLIP_SUFFIXES = (".mp4", ".mkv")


class ClipStore(Protocol):
    async def keep(self, stream_id: str, path: Path) -> tuple[str, int]:
        """Store the clip file at ``path``; return its uri and size in bytes."""

    async def find(self, stream_id: str, folder: Path, name: str) -> tuple[str, int] | None:
        """Uri and size of the stored clip file ``name``, or None."""

    def open(self, stream_id: str, folder: Path, clip_id: str) -> contextlib.AbstractAsyncContextManager[Path | None]:
        """A local path to read clip ``clip_id`` from while the context is open (None: no such clip)."""


class LocalClipStore:
    """Clips stay in the stream's clip folder."""

    async def keep(self, stream_id: str, path: Path) -> tuple[str, int]:
        return path.resolve().as_uri(), path.stat().st_size

    async def find(self, stream_id: str, folder: Path, name: str) -> tuple[str, int] | None:
        path = folder / name
        return (path.resolve().as_uri(), path.stat().st_size) if path.is_file() else None

    @contextlib.asynccontextmanager
    async def open(self, stream_id: str, folder: Path, clip_id: str) -> AsyncIterator[Path | None]:
        yield next((p for p in (folder / f"{clip_id}{s}" for s in CLIP_SUFFIXES) if p.is_file()), None)


class NatsClipStore:
    """Clips live in a JetStream object store bucket, created on first use."""

    def __init__(self, js: JetStreamContext, bucket: str = "clips", replicas: int = 1) -> None:
        self.js = js
        self.bucket = bucket
        self.replicas = replicas  # copies of a new bucket in a NATS cluster (nats_replicas)
        self._store: ObjectStore | None = None

    def uri(self, stream_id: str, name: str) -> str:
        return f"nats-object://{self.bucket}/{stream_id}/{name}"

    async def _obs(self) -> ObjectStore:
        if self._store is None:
            try:
                self._store = await self.js.object_store(self.bucket)
            except BucketNotFoundError:
                config = ObjectStoreConfig(bucket=self.bucket, description="streamsight clips", replicas=self.replicas)
                self._store = await self.js.create_object_store(self.bucket, config=config)
        return self._store

    async def keep(self, stream_id: str, path: Path) -> tuple[str, int]:
        obs = await self._obs()
        with path.open("rb") as f:
            info = await obs.put(f"{stream_id}/{path.name}", f)
        path.unlink()  # the bucket holds it now
        return self.uri(stream_id, path.name), int(info.size or 0)

    async def find(self, stream_id: str, folder: Path, name: str) -> tuple[str, int] | None:
        obs = await self._obs()
        try:
            info = await obs.get_info(f"{stream_id}/{name}")
        except (ObjectNotFoundError, NotFoundError):
            return None
        return self.uri(stream_id, name), int(info.size or 0)

    @contextlib.asynccontextmanager
    async def open(self, stream_id: str, folder: Path, clip_id: str) -> AsyncIterator[Path | None]:
        obs = await self._obs()
        for suffix in CLIP_SUFFIXES:
            name = f"{clip_id}{suffix}"
            try:
                await obs.get_info(f"{stream_id}/{name}")
            except (ObjectNotFoundError, NotFoundError):
                continue
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{clip_id}.", suffix=suffix, dir=folder)  # one per reader
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as f:
                    await obs.get(f"{stream_id}/{name}", writeinto=f)
                yield tmp
            finally:
                tmp.unlink(missing_ok=True)
            return
        yield None
