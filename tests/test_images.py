import io

import numpy as np
import pytest
from PIL import Image

from amgan_search.errors import UserError
from amgan_search.images import (fit_square, load_image, picture_grid, save_image, to_tensor,
                                 to_uint8, unfit_square)


def _save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_rgba_is_composited_over_white(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 255
    arr[:2, :, 3] = 255  # top opaque red, bottom transparent
    p = _save(Image.fromarray(arr, "RGBA"), tmp_path / "a.png")
    out = load_image(p)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    assert out[0, 0].tolist() == [255, 0, 0] and out[3, 0].tolist() == [255, 255, 255]


def test_palette_grayscale_16bit_cmyk(tmp_path):
    pal = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4)).convert("P")
    assert load_image(_save(pal, tmp_path / "p.png")).shape == (4, 4, 3)
    gray = Image.fromarray(np.full((3, 5), 128, np.uint8), "L")
    assert load_image(_save(gray, tmp_path / "g.png"))[0, 0].tolist() == [128] * 3
    deep = Image.fromarray(np.full((2, 2), 65535, np.uint16))
    assert load_image(_save(deep, tmp_path / "d.png"))[0, 0].tolist() == [255] * 3
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    red = load_image(_save(cmyk, tmp_path / "c.jpg"))
    assert red[0, 0, 0] > 200 and red[0, 0, 1] < 60


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (6, 2), (0, 0, 255))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    p = tmp_path / "r.jpg"
    img.save(p, exif=exif)
    assert load_image(p).shape == (6, 2, 3)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_unreadable_files_raise_one_line_errors(tmp_path, content):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_image(p)
    assert "bad.png" in str(err.value) and "\n" not in str(err.value)


def test_truncated_png_and_directory_and_missing(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    p = tmp_path / "t.png"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for path in (p, tmp_path, tmp_path / "missing.png"):
        with pytest.raises(UserError):
            load_image(path)


@pytest.mark.slow
def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    # A PNG header that claims 50,000 x 50,000 pixels.
    Image.MAX_IMAGE_PIXELS, before = None, Image.MAX_IMAGE_PIXELS
    try:
        p = tmp_path / "bomb.png"
        Image.new("1", (50_000, 50_000)).save(p)
    finally:
        Image.MAX_IMAGE_PIXELS = before
    with pytest.raises(UserError, match="pixel limit"):
        load_image(p)


def test_save_is_atomic_and_round_trips(tmp_path):
    arr = np.random.default_rng(1).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    save_image(tmp_path / "x.png", arr)
    assert (load_image(tmp_path / "x.png") == arr).all()
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_fit_square_keeps_aspect_and_unfit_restores_the_frame():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 200
    square, box = fit_square(arr, 16)
    assert square.shape == (16, 16, 3) and box == (4, 0, 8, 16)
    assert (square[:4] == 255).all()
    back = unfit_square(square, box, (20, 40))
    assert back.shape == (20, 40, 3) and abs(int(back[10, 5, 0]) - 200) < 10


def test_tensor_round_trip():
    arr = np.random.default_rng(2).integers(0, 255, (3, 4, 3), dtype=np.uint8)
    t = to_tensor(arr)
    assert t.shape == (1, 3, 3, 4) and float(t.max()) <= 1.0
    assert (to_uint8(t)[0] == arr).all()


def test_picture_grid_places_tiles_captions_and_labels():
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    grid = picture_grid([[(red, "a"), (None, "")], [(red, "")]], 16, caption_h=4)
    assert grid.shape == (2 * (16 + 4), 2 * 16, 3)  # as wide as the longest row
    assert (grid[20:36, 0:16] == red).all() and (grid[20:36, 16:32] == 255).all()
    assert (grid[4:6, 20:29] == 220).all()  # an unreadable picture is a grey box
    labelled = picture_grid([[(red, "")]], 16, columns=3, labels=["color=red"])
    assert labelled.shape[0] == 16 and labelled.shape[1] > 3 * 16
    assert (labelled[:, -48:-32] == red).all() and (labelled[:, -32:] == 255).all()
