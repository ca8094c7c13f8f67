"""The gallery command end to end at a tiny size with random weights: three sheets, every result kept, and a banner
that says the weights are random (in red), so such a sheet cannot pass for a result."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from nst_engine.bench import gallery


@pytest.mark.slow
def test_gallery_writes_three_labelled_sheets(tmp_path: Path, shared_images: Path, cache_dir: Path) -> None:
    written = gallery.render("random", 48, 2, 2, tmp_path, tile=96)
    assert [p.name for p in written] == ["turtle_great_wave.png", "tubingen_paintings.png", "controls.png"]
    assert len(list((tmp_path / "full").glob("*.png"))) == 11
    sheet = cv2.imread(str(written[0]))
    banner = sheet[:40]
    red = (banner[..., 2] > 150) & (banner[..., 0] < 80) & (banner[..., 1] < 80)
    assert red.sum() > 50, "random weights must be announced in red across the top"
    # Laying out again from the kept results renders nothing and gives the same sheets.
    again = gallery.render("random", 48, 2, 2, tmp_path / "again", tile=96)
    relaid = gallery.render("random", 48, 2, 2, tmp_path, reuse=True, tile=96)
    assert np.array_equal(cv2.imread(str(relaid[1])), cv2.imread(str(written[1])))
    assert np.array_equal(cv2.imread(str(again[1])), cv2.imread(str(written[1])))  # seeded: same pictures
