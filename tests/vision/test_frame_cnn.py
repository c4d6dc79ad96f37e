"""Frame CNN: ONNX embedding and logits agree with the torch EfficientNet-Lite0 they came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def rgb_frames(shared_data, decode_media):
    frames, _ = decode_media(shared_data / "media" / "bigbuckbunny.mp4", size=(224, 224), fmt="rgb24")
    vtest, _ = decode_media(shared_data / "media" / "vtest.avi", size=(224, 224), fmt="rgb24")
    return np.concatenate([frames[::40], vtest[::300]])


def test_onnx_matches_torch(models, rgb_frames):
    from training.vision.export_frame_cnn import build

    torch.set_num_threads(2)
    with torch.no_grad():
        emb_ref, logits_ref = build()(torch.from_numpy(rgb_frames.transpose(0, 3, 1, 2).astype(np.float32)))
    emb_ref = emb_ref.numpy() / np.linalg.norm(emb_ref.numpy(), axis=1, keepdims=True)
    emb = models.embed(rgb_frames)
    assert emb.shape == (len(rgb_frames), 1280)
    assert np.min((emb * emb_ref).sum(1)) > 0.9999
    logits = models._frame.run(["logits"], {"rgb": rgb_frames.transpose(0, 3, 1, 2).astype(np.float32)})[0]
    assert np.abs(logits - logits_ref.numpy()).max() < 1e-2 * np.abs(logits_ref.numpy()).max()


def test_embeddings_separate_scenes(models, rgb_frames):
    emb = models.embed(rgb_frames)
    same_scene = 1.0 - float(emb[0] @ emb[1])  # two Big Buck Bunny frames 1.6 s apart
    other_scene = 1.0 - float(emb[0] @ emb[-1])  # Big Buck Bunny vs. the vtest hall
    assert same_scene < other_scene


def test_embed_rejects_wrong_size(models):
    with pytest.raises(ValueError, match="224"):
        models.embed(np.zeros((1, 100, 100, 3), np.uint8))
