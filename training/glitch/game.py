"""Labelled tiles from REAL game footage (OpenArena takes), for the glitch classifier (models 7 and 8, not shipped).

Model 5 was trained on generated scenes only. On real clean OpenArena takes it called the
death-screen scoreboard's yellow highlight bar stripes (tiles at 0.953-0.969, over the 0.95 open
score; MODEL.md), and it misses many real 720p game frames read with a height too small. This
module turns recorded takes (TRAINING_TAKES, named by sha256) into tiles the way ingest and the
glitch service see them:

- frames sampled at 2 fps as ingest's glitch sampling takes them (the first frame at or after
  each 0.5 s), at the source's 1280x720 (the glitch frame size), cut into the service's tiles
  (services/glitch/tiles.py);
- clean: CLEAN_TILES tiles drawn at random from every sampled frame (death-screen scoreboards,
  HUD, kill feed, explosions included: nothing is picked by content);
- hard clean (model 8): every other tile of a sampled frame that a miner model (by default the
  shipped int8 classifier, model 5; its sha256 is kept in the file) scores HARD_SCORE or more
  stripes: ordinary game content the shipped model takes for stripes, which random draws rarely
  meet (70-320 of a take's 6000 tiles in Session 11's five takes; the false alarms on clean takes
  were such tiles);
- stripes: every STRIPES_EVERY-th sampled frame read back with a wrong width or height
  (corrupt.read_as: the frame's I420 bytes, then the next decoded frame's, as a raw file runs
  on), at the source's size, with the dataset's width mix (dataset.STRIDE_MIX) but heights too
  small two times in three (SHORT_HEIGHT_SHARE: model 5 called 22/30 game frames read too short
  against 18/18 too tall); dataset.ENCODED_SHARE of them coded as all-intra H.264 at a CRF of
  18-33 (the dataset's cap) before they are cut, as dataset.py codes its synthetic corruption;
  labels from the visibly changed pixels (corrupt.VISIBLE, dataset.KIND_SHARE).

The takes are recorded by ../shared/tools/record-gameplay.sh (bot matches: not reproducible to
the byte), stay out of git, and are checked by sha256: a missing or different file stops the
build with the recording command. Without them `python -m training.glitch.dataset` still builds
the synthetic dataset (model 5's); `python -m training.glitch.train` then needs
`--synthetic-only`.

Held out, never used here: ../shared/data/media/openarena_dm2.mp4 and every take not in
TRAINING_TAKES (training.glitch.clean_footage marks a training take judged by a model trained on
takes and leaves it out of the totals). Model 7's takes (oa_dm1, oa_dm3, oa_dm5 of the first
sessions) are gone from this machine; their sha256 stay in EARLIER_TAKE_SHA256.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

from training.glitch import corrupt, dataset, scenes

ROOT = Path(__file__).resolve().parents[2]
# path under the repository root -> sha256 of the take the tiles are built from
TRAINING_TAKES = {  # model 8's: session 9's re-takes of maps whose earlier takes raised false alarms
    "media/footage9/openarena_oa_dm1.mp4": "5462920849b7641d87911265d34895a03e7ab6dd61b931fd2fd857f60e4c7246",
    "media/footage9/openarena_oa_dm6.mp4": "91fd561df093944f9fe1f07e5554ba29276a8e9cdcf0fab85e1670efbe69e5ec",
    "media/footage9/openarena_islanddm.mp4": "13366bcfc23a8ce9b81a54ff50f2d78501823825a23ab857c8283a98b57f5332",
    "media/footage9/openarena_czest1dm.mp4": "0a8141cd0d85763a11ce36cc1e89903d98f72fd6292ac48e23f23a9a9d69e33c",
    "media/footage9/openarena_am_lavaarena.mp4": "f54e8b39fd08c86d81a401a874b2b8c0d48e0e261b919c63ede23f0cce4e4386",
}
EARLIER_TAKE_SHA256 = frozenset({  # model 7's takes: oa_dm1, oa_dm3, oa_dm5 (media/footage, footage2)
    "6848f3909f54622810eb247a2cfee230b7472ef5f95f6496708db47927e00b4b",
    "bda386c02e04248303335f4b472d0e12b3b5302cdad94c63aa2b24824558033b",
    "d8f075cbfb000e94f5c2b489e5c8c91dc02facf6484c0c89eb9700a307516acd",
})
TRAINING_TAKE_SHA256 = frozenset(TRAINING_TAKES.values()) | EARLIER_TAKE_SHA256
# Models trained on generated scenes only (model 5, fp32 and int8): every take is held out for them.
SYNTHETIC_ONLY_MODELS = frozenset({
    "17f2f26695ced04306cada58a1289ca49519f81353751335dc79899227cc0062",
    "88c18d31d9bbaafced621392399eef29864b83102fda8f929768d46e04ccfcc4",
})
RECORD = "OUT=$PWD/media/<folder> bash ../shared/tools/record-gameplay.sh <map>"
SEED = 70_000  # take k draws from default_rng(SEED + k)
SAMPLE_EVERY_S = 0.5  # ingest's glitch sampling, 2 fps
SIZE = (1280, 720)
CLEAN_TILES = 8  # of a frame's 24: 2000 a take
STRIPES_EVERY = 2  # every second sampled frame gives a wrong-stride read: 125 reads a take
STRIPES_TILES = 4  # as dataset._synthetic_tiles
SHORT_HEIGHT_SHARE = 2 / 3
CRF_RANGE = (18, dataset.MAX_RECODE_CRF)
HARD_SCORE = 0.5  # a clean tile the miner scores this much stripes is a hard one (0.95 opens an incident)


class TakeError(RuntimeError):
    """A training take is missing or is not the recording the tiles were built from."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_takes(root: Path = ROOT) -> list[Path]:
    """The training takes' paths, after checking each one's sha256; TakeError names what is wrong."""
    out = []
    for rel, want in TRAINING_TAKES.items():
        path = root / rel
        if not path.is_file():
            raise TakeError(f"training take {rel} is missing: record it with `{RECORD}` (map {path.stem.removeprefix('openarena_')}, "
                            f"folder {Path(rel).parent.name}); a new recording differs from sha256 {want[:12]}..., so the tiles and the "
                            f"model trained on them change")
        got = sha256_file(path)
        if got != want:
            raise TakeError(f"training take {rel} has sha256 {got[:12]}..., not {want[:12]}... (the take the tiles are built from): "
                            f"it was re-recorded (`{RECORD}`); update TRAINING_TAKES in training/glitch/game.py only for a new model")
        out.append(path)
    return out


def sampled_pairs(path: Path, every_s: float = SAMPLE_EVERY_S) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(media time, frame, next decoded frame) at every `every_s`, RGB at the take's own size."""
    out: list[tuple[float, np.ndarray, np.ndarray]] = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        pending, next_t = None, 0.0
        for f in c.decode(stream):
            if pending is not None:
                out.append((pending[0], pending[1], f.to_ndarray(format="rgb24")))
                pending = None
            t = float(f.pts * f.time_base)
            if t + 1e-6 >= next_t:
                if (f.width, f.height) != SIZE:
                    raise ValueError(f"{path}: {f.width}x{f.height}, the takes are {SIZE[0]}x{SIZE[1]}")
                pending = (t, f.to_ndarray(format="rgb24"))
                next_t += every_s
    return out


def wrong_stride(frame: np.ndarray, next_frame: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A wrong-width or wrong-height read at the source's size, shown at that size; (rgb, visible mask)."""
    h, w, _ = frame.shape
    if rng.random() < dataset.STRIDE_MIX["height_share"]:
        d = int(rng.integers(8, 97)) * (-1 if rng.random() < SHORT_HEIGHT_SHARE else 1)
        ww, hh = w, h + d
    else:
        d = int(rng.integers(1, 65)) * int(rng.choice([-1, 1]))
        if rng.random() < dataset.STRIDE_MIX["small_width_share"]:
            d = int(np.sign(d)) * int(rng.integers(1, 9))
        ww, hh = w + d, h
    bad = corrupt.resize(corrupt.read_as(frame, next_frame, ww, hh), w, h)
    visible = np.abs(bad.astype(np.int16) - frame.astype(np.int16)).mean(axis=2) > corrupt.VISIBLE
    return bad, visible.astype(np.float32)


def take_tiles(index: int, path: Path, miner: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tiles [N,224,224,3], labels, the sampled frame's media time (ms) and a hard-clean flag per
    tile of one take; hard clean tiles only with a `miner` model."""
    rng = np.random.default_rng(SEED + index)
    pairs = sampled_pairs(path)
    scorer = _miner(miner) if miner is not None else None
    tiles: list[np.ndarray] = []
    labels: list[int] = []
    times: list[int] = []
    hard: list[bool] = []
    bad: list[tuple[float, np.ndarray, np.ndarray]] = []
    for k, (t, frame, nxt) in enumerate(pairs):
        drawn = dataset._tiles_with_mask(frame, np.zeros(frame.shape[:2], np.float32), 0, rng, CLEAN_TILES)
        for tile, label in drawn:
            tiles.append(tile)
            labels.append(label)
            times.append(round(t * 1000))
            hard.append(False)
        if scorer is not None:
            for tile in hard_tiles(frame, scorer, [t for t, _ in drawn]):
                tiles.append(tile)
                labels.append(0)
                times.append(round(t * 1000))
                hard.append(True)
        if k % STRIPES_EVERY == 0:
            img, mask = wrong_stride(frame, nxt, rng)
            bad.append((t, img, mask))
    recode = [k for k in range(len(bad)) if rng.random() < dataset.ENCODED_SHARE]
    with tempfile.TemporaryDirectory() as tmp:
        for k in recode:  # each at its own CRF: one all-intra file a frame
            crf = int(rng.integers(CRF_RANGE[0], CRF_RANGE[1] + 1))
            out = Path(tmp) / "recode.mkv"
            scenes.encode(bad[k][1][None], out, crf=crf, gop=1)
            bad[k] = (bad[k][0], scenes.decode(out)[0][0], bad[k][2])
    for t, img, mask in bad:
        for tile, label in dataset._tiles_with_mask(img, mask, corrupt.KINDS.index("stripes"), rng, STRIPES_TILES):
            tiles.append(tile)
            labels.append(label)
            times.append(round(t * 1000))
            hard.append(False)
    print(f"{path.name}: {len(pairs)} frames, {labels.count(0) - sum(hard)} clean, {sum(hard)} hard clean and {labels.count(1)} stripes tiles",
          file=sys.stderr, flush=True)  # noqa: T201
    return np.stack(tiles), np.asarray(labels, np.int64), np.asarray(times, np.int64), np.asarray(hard, bool)


def _miner(path: Path):
    from services.glitch.classifier import GlitchClassifier

    return GlitchClassifier(path, intra_threads=1)


def hard_tiles(frame: np.ndarray, scorer, drawn: list[np.ndarray]) -> list[np.ndarray]:
    """The frame's tiles the miner scores HARD_SCORE or more stripes, but for those drawn already."""
    from services.glitch.tiles import cut

    cut_tiles, _ = cut(frame)
    stripes = scorer.tile_probabilities(cut_tiles)[:, corrupt.KINDS.index("stripes")]
    out = []
    for tile, score in zip(cut_tiles, stripes):
        if score >= HARD_SCORE and not any(np.array_equal(tile, d) for d in drawn):
            out.append(np.ascontiguousarray(tile))
    return out


def _take(args: tuple[int, str, str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return take_tiles(args[0], Path(args[1]), Path(args[2]) if args[2] else None)


def build(path: Path, workers: int = 2, miner: Path | None = None) -> None:
    """var/glitch/game.npz: tiles, labels, take (its index in TRAINING_TAKES), media time (ms) and
    hard-clean flag per tile, and the miner's sha256 (default miner: the shipped int8 model)."""
    takes = check_takes()
    if miner is None:
        from services.glitch.classifier import shipped_model

        miner = shipped_model("int8")
    with mp.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_take, [(k, str(p), str(miner)) for k, p in enumerate(takes)])
    take = np.concatenate([np.full(len(p[1]), k, np.int64) for k, p in enumerate(parts)])
    labels = np.concatenate([p[1] for p in parts])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, tiles=np.concatenate([p[0] for p in parts]), labels=labels, take=take, time_ms=np.concatenate([p[2] for p in parts]),
             hard=np.concatenate([p[3] for p in parts]), take_sha256=np.asarray(list(TRAINING_TAKES.values())),
             miner_sha256=np.asarray(sha256_file(miner)))
    print(f"{path.name}: {len(labels)} tiles {({k: int((labels == i).sum()) for i, k in enumerate(corrupt.KINDS)})}, "
          f"{int(np.concatenate([p[3] for p in parts]).sum())} of the clean ones hard", file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    try:
        build(dataset.OUT / "game.npz")
    except TakeError as e:
        raise SystemExit(str(e)) from None
