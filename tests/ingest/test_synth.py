"""The synthetic media generator writes every container it promises, with what it says it planted."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from streamsight.app.synth import make_media


@pytest.mark.parametrize("ext,vcodec,acodec", [("mp4", "h264", "aac"), ("mkv", "h264", "aac"), ("ts", "h264", "aac"),
                                               ("flv", "h264", "aac"), ("avi", "h264", "pcm_s16le"),
                                               ("webm", "vp8", "opus")])
def test_containers_round_trip(tmp_path: Path, ext: str, vcodec: str, acodec: str) -> None:
    info = make_media(tmp_path / f"x.{ext}", duration=1.0, width=160, height=96, fps=10)
    with av.open(str(info.path)) as c:
        assert c.streams.video[0].codec_context.name == vcodec
        assert c.streams.audio[0].codec_context.name == acodec
        frames = list(c.decode(video=0))
    assert len(frames) == info.frame_count == 10
    assert (frames[0].width, frames[0].height) == (160, 96)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported container"):
        make_media(tmp_path / "x.mov")
    with pytest.raises(ValueError, match="cannot carry"):
        make_media(tmp_path / "x.mp4", audio="pcm")
    with pytest.raises(ValueError, match="overlap"):
        make_media(tmp_path / "x.mp4", segments=[(0, 3, "pan"), (2, 4, "action")])
    with pytest.raises(ValueError, match="unknown motion kind"):
        make_media(tmp_path / "x.mp4", segments=[(0, 3, "zoom")])
