"""Image files from untrusted sources (issue 18): high bit depths decode by their real range, decompression
bombs and odd floats are refused naming the file, and a corrupt image read by a DataLoader worker is one
paragraph in the main process, not the worker's traceback."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from robust.data import DatasetInfo
from robust.errors import DataError
from robust.loader import BatchLoader
from robust_datasets.imagefiles import ImageFileSplit, Resize, decode_image

SIDE = 16


def ramp() -> np.ndarray:
    return np.linspace(0.0, 1.0, SIDE * SIDE).reshape(SIDE, SIDE)


def test_16_bit_png_is_scaled_by_257_not_clipped(tmp_path):
    values = np.rint(ramp() * 65535).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode == "I;16"  # what PIL gives; its convert("RGB") clips to 0..255 (17 distinct values)
    decoded = decode_image(tmp_path / "g16.png", Resize(SIDE))
    expected = np.rint(values / 257.0).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[:, :, channel], expected)
    assert len(np.unique(decoded)) > 200


def test_float_tiff_in_unit_range_is_scaled_by_255(tmp_path):
    values = ramp().astype(np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    decoded = decode_image(tmp_path / "f.tif", Resize(SIDE), mode="L")
    np.testing.assert_array_equal(decoded[:, :, 0], np.rint(values.astype(np.float64) * 255).astype(np.uint8))


def test_32_bit_integers_that_fit_in_8_bits_stay(tmp_path):
    values = (ramp() * 255).astype(np.int32)
    Image.fromarray(values).save(tmp_path / "i.tif")  # mode I
    decoded = decode_image(tmp_path / "i.tif", Resize(SIDE), mode="L")
    np.testing.assert_array_equal(decoded[:, :, 0], values.astype(np.uint8))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (ramp() * 1000, r"floating-point pixels in \[0, 1000\].*only floats in \[0, 1\]"),
        (ramp() - 0.5, r"floating-point pixels in \[-0.5, 0.5\]"),
        (np.where(ramp() > 0.5, np.nan, ramp()), r"with NaN or infinity"),
    ],
)
def test_floats_without_a_known_scale_are_refused(tmp_path, values, message):
    path = tmp_path / "odd.tif"
    Image.fromarray(values.astype(np.float32)).save(path)
    with pytest.raises(DataError, match=message) as caught:
        decode_image(path, Resize(SIDE))
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("limit", [SIDE * SIDE - 1, (SIDE * SIDE) // 3])  # PIL warns past 1x, raises past 2x
def test_decompression_bombs_are_refused_naming_the_file(tmp_path, monkeypatch, limit):
    path = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((SIDE, SIDE, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(
        DataError, match=rf"'{path}' is refused as a possible decompression bomb: (16x16 )?\(256 pixels\)"
    ):
        decode_image(path, Resize(SIDE))


def test_a_real_bomb_header_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"  # a 1x1 PNG whose header claims 100000 x 100000 pixels (10^10, ~30 GB)
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = (100000).to_bytes(4, "big") * 2  # IHDR width and height, then the chunk's CRC
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"decompression bomb: \(10000000000 pixels\)"):
        decode_image(path, Resize(SIDE))


def test_a_corrupt_streamed_image_is_one_paragraph_not_a_worker_traceback(tmp_path):
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((SIDE, SIDE, 3), i, np.uint8)).save(paths[-1])
    paths[2].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    split = ImageFileSplit(paths, torch.zeros(4, dtype=torch.long), Resize(SIDE))
    info = DatasetInfo("t", 2, (3, SIDE, SIDE), ["a", "b"], ["a", "b"])
    loader = BatchLoader(split, info, torch.device("cpu"), batch_size=2, num_workers=1, data_on_device="no")
    with pytest.raises(DataError) as caught:
        list(loader.batches(loader.sequential()))
    message = str(caught.value)
    assert message.startswith(f"Image file {str(paths[2])!r} is corrupt or not an image"), message
    assert "Traceback" not in message and "worker" not in message and "\n" not in message
