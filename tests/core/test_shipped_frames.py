"""Frames shipped at the size the cloud needs: resized on the edge, preprocessed on
the cloud to exactly what the edge would have computed from the full frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from jetsplit.bundle import load_bundle
from jetsplit.handoff import FRAME, pack
from jetsplit.preprocess import Preprocess


@pytest.mark.parametrize("colour", ["gray", "rgb", "bgr"])
def test_shipped_frame_preprocesses_to_the_full_frames_input(colour: str) -> None:
    pre = Preprocess(224, 224, colour, "nchw", mean=(0.4,), std=(0.2,))  # type: ignore[arg-type]
    camera = cv2.resize(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR), (1280, 720))
    shipped = pre.shipped(camera)
    assert shipped.dtype == np.uint8 and shipped.shape[:2] == (224, 224)
    assert shipped.shape == ((224, 224) if colour == "gray" else (224, 224, 3))
    np.testing.assert_array_equal(pre.batch([shipped]), pre.batch([camera]))
    assert shipped.nbytes * 18 < camera.nbytes  # 1280x720x3 -> 224x224(x3)


def test_little_big_hand_off_ships_the_models_size_unless_full_frames() -> None:
    bundle = load_bundle("demo:little-big")
    frame = np.full((480, 640, 3), 128, np.uint8)
    small = pack(bundle, 1, frame, None, None)[FRAME]
    assert small.shape == (bundle.preprocess.height, bundle.preprocess.width)
    from dataclasses import replace

    full = replace(bundle, wire=replace(bundle.wire, frame_size="full"))
    assert pack(full, 1, frame, None, None)[FRAME] is frame
