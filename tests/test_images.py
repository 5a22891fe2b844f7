"""Reading photos: every odd or broken input gives a clear ImageError, never a crash."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pix2vertex_addon.core.images import MIN_SIDE, ImageError, encode_png, load_image, save_png_atomic

from photos import photo_paths


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)


def test_rgb_png_roundtrip(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out, info = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out, rgb)
    assert info.size == (90, 120) and info.format == "PNG" and not info.exif_transposed


def test_exif_orientation_is_applied(tmp_path):
    yy, xx = np.mgrid[0:120, 0:90]
    rgb = np.stack([xx * 2, yy * 2, np.full_like(xx, 60)], axis=2).astype(np.uint8)  # smooth: JPEG-safe
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out, info = load_image(tmp_path / "r.jpg")
    assert out.shape == (90, 120, 3) and info.exif_transposed
    expected = np.asarray(Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_270))
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 3  # JPEG noise only


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb8(tmp_path, rgb, mode):
    base = Image.fromarray(rgb)
    if mode in ("I;16", "I", "F"):
        g = np.asarray(base.convert("L"), dtype=np.float64)
        arr = {"I;16": (g * 257).astype(np.uint16), "I": (g * 257).astype(np.int32), "F": (g / 255).astype(np.float32)}[mode]
        img = Image.fromarray(arr)
        assert img.mode == mode
        path = tmp_path / ("x.tif" if mode != "I;16" else "x.png")
    else:
        img = base.convert(mode)
        path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png" if mode != "P" else "x.gif")
        if mode == "CMYK":
            path = tmp_path / "x.tif"
    img.save(path)
    out, info = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (120, 90, 3)
    if mode in ("I;16", "I", "F"):
        grey = np.asarray(base.convert("L"), dtype=int)
        assert np.abs(out[..., 0].astype(int) - grey).max() <= 1, "16-bit/float scaled to the full 8-bit range"
    if mode == "CMYK":
        assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 40


def test_transparent_pixels_become_grey(tmp_path):
    a = np.zeros((80, 80, 4), np.uint8)
    a[..., 0] = 255
    a[:40, :, 3] = 255
    Image.fromarray(a, "RGBA").save(tmp_path / "t.png")
    out, info = load_image(tmp_path / "t.png")
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[-1, -1]) == (128, 128, 128)
    assert any("transparency" in n for n in info.notes)


def _bad_files(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "good.jpg", quality=90)
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    png = tmp_path / "good.png"
    Image.fromarray(rgb).save(png)
    corrupt = bytearray(png.read_bytes())
    corrupt[60:200] = bytes(range(140))  # inside the image data: CRC and zlib stream broken
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    (tmp_path / "text.jpg").write_text("this is not a photo\n")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(rgb[:16, :16]).save(tmp_path / "tiny.png")
    (tmp_path / "folder.jpg").mkdir()
    return {
        "truncated.jpg": "truncated or corrupt",
        "corrupt.png": "corrupt",
        "text.jpg": "not an image",
        "empty.png": "empty",
        "tiny.png": "too small",
        "missing.png": "no such file",
        "folder.jpg": "folder",
    }


def test_bad_files_give_clear_errors(tmp_path, rgb):
    for name, words in _bad_files(tmp_path, rgb).items():
        with pytest.raises(ImageError) as err:
            load_image(tmp_path / name)
        msg = str(err.value)
        assert name in msg and words in msg, msg


def test_tiny_limit_is_the_documented_one(tmp_path):
    Image.fromarray(np.zeros((MIN_SIDE, MIN_SIDE, 3), np.uint8)).save(tmp_path / "ok.png")
    assert load_image(tmp_path / "ok.png")[0].shape == (MIN_SIDE, MIN_SIDE, 3)


def test_huge_image_is_refused_without_decoding(tmp_path, monkeypatch):
    from pix2vertex_addon.core import images

    Image.new("RGB", (1200, 900)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1_000_000)
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "big.png")


def test_non_ascii_path(tmp_path, rgb):
    p = tmp_path / "fötö 写真" / "Zoë.png"
    p.parent.mkdir()
    Image.fromarray(rgb).save(p)
    assert load_image(p)[0].shape == (120, 90, 3)


def test_real_photos_load():
    for name, path in photo_paths().items():
        rgb, info = load_image(path)
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8, name


def test_save_png_atomic(tmp_path, rgb):
    p = save_png_atomic(tmp_path / "x.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(p)), rgb)
    assert [q.name for q in tmp_path.iterdir()] == ["x.png"]
    with pytest.raises(ValueError):
        save_png_atomic(tmp_path / "y.png", rgb.astype(np.float32))
    assert [q.name for q in tmp_path.iterdir()] == ["x.png"]


@pytest.mark.parametrize("shape", [(7, 5), (7, 5, 3), (1, 9, 4), (64, 48, 3)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_encode_png_decodes_to_the_same_pixels(shape, dtype):
    """Our PNG writer against two decoders (PIL for 8-bit and 16-bit grey; OpenCV's libpng for
    16-bit colour, which PIL cannot hold), every row type (the first row unfiltered, then Up)."""
    import io

    import cv2

    rng = np.random.default_rng(len(shape) * 10 + shape[0])
    a = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    data = encode_png(a, 1)
    if dtype == np.uint8 or len(shape) == 2:
        back = np.asarray(Image.open(io.BytesIO(data)))
    else:
        back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        back = back[..., [2, 1, 0, 3][: shape[2]]]  # BGR(A) -> RGB(A)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, a)


def test_encode_png_is_as_small_as_pils_on_a_smooth_image():
    import io

    y, x = np.mgrid[0:256, 0:256]
    img = np.stack([x, y, (x + y) // 2], axis=2).astype(np.uint8)
    img = (img + np.random.default_rng(0).integers(0, 3, img.shape)).astype(np.uint8)
    ours = len(encode_png(img, 1))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    assert ours <= 1.1 * len(buf.getvalue())


def test_encode_png_rejects_what_it_cannot_write():
    for bad in (np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4), np.uint8),
                np.zeros(4, np.uint8)):
        with pytest.raises(ValueError):
            encode_png(bad)
