"""Opening images of every kind as RGB, image folders, image paths in tables, bad images."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sft_hub.data.images import (BadImages, find_bad_images, open_image, read_image_folder,
                                 resolve_image_path, scan_label_folders)
from sft_hub.errors import DataError


def _save(img: Image.Image, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


# -- modes --------------------------------------------------------------------------------------
def test_grayscale_becomes_rgb_with_same_intensity(tmp_path):
    path = _save(Image.new("L", (4, 3), 100), tmp_path / "g.png")
    img = open_image(str(path))
    assert img.mode == "RGB" and img.size == (4, 3)
    assert img.getpixel((0, 0)) == (100, 100, 100)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    array = np.array([[0, 32896, 65535]], dtype=np.uint16)  # 0, mid grey, white in 16 bits
    path = _save(Image.fromarray(array), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")  # really stored as 16-bit
    img = open_image(path)
    assert [img.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_rgba_transparent_area_becomes_white(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    img = open_image(_save(rgba, tmp_path / "a.png"))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0)) == (255, 0, 0)


def test_palette_image_keeps_its_colours(tmp_path):
    pal = Image.new("RGB", (2, 2), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    img = open_image(_save(pal, tmp_path / "p.gif"))
    assert img.mode == "RGB"
    r, g, b = img.getpixel((0, 0))
    assert abs(r - 10) < 8 and abs(g - 200) < 8 and abs(b - 30) < 8


def test_cmyk_jpeg_and_bytes_input(tmp_path):
    buf = io.BytesIO()
    Image.new("CMYK", (3, 3), (0, 0, 0, 0)).save(buf, format="JPEG")
    img = open_image(buf.getvalue())
    assert img.mode == "RGB" and img.getpixel((1, 1))[0] > 240  # no ink = white
    assert open_image({"bytes": buf.getvalue(), "path": None}).mode == "RGB"


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (4, 2), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(img, tmp_path / "phone.jpg", exif=exif)
    assert Image.open(path).size == (4, 2)
    assert open_image(path).size == (2, 4)


# -- bad images ---------------------------------------------------------------------------------
def test_corrupt_image_error_names_the_file(tmp_path):
    good = _save(Image.new("RGB", (8, 8)), tmp_path / "ok.png")
    truncated = tmp_path / "broken.png"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(DataError) as err:
        open_image(str(truncated))
    assert err.value.file == str(truncated)
    assert "skip_bad_images" in err.value.hint


def test_find_bad_images_fails_or_skips_and_counts(tmp_path):
    good = str(_save(Image.new("RGB", (8, 8)), tmp_path / "ok.png"))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    values = [good, str(text), {"path": str(tmp_path / "missing.png"), "bytes": None}]
    with pytest.raises(DataError, match="cannot read image"):
        find_bad_images(values, split="train", skip=False)
    bad = BadImages()
    assert find_bad_images(values, split="train", skip=True, bad=bad) == [1, 2]
    assert bad.count == 2
    assert "notes.png" in bad.summary() and "missing.png" in bad.summary()


# -- image folders ------------------------------------------------------------------------------
def test_image_folder_reads_mixed_formats_and_ignores_other_files(tmp_path):
    _save(Image.new("RGB", (5, 5)), tmp_path / "train" / "cat" / "1.jpg")
    _save(Image.new("L", (5, 5)), tmp_path / "train" / "cat" / "2.PNG")
    _save(Image.new("RGBA", (5, 5)), tmp_path / "train" / "dog" / "sub" / "3.webp")
    (tmp_path / "train" / "dog" / "README.txt").write_text("not an image")
    (tmp_path / "train" / "dog" / ".DS_Store").write_bytes(b"\0")

    ds = read_image_folder([str(tmp_path / "train")], spec=None)
    assert ds.column_names == ["image", "label"]
    assert ds["label"] == ["cat", "cat", "dog"]
    assert all(open_image(p).mode == "RGB" for p in ds["image"])


def test_folder_of_split_folders_says_how_to_point_at_it(tmp_path):
    _save(Image.new("RGB", (5, 5)), tmp_path / "train" / "cat" / "1.jpg")
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        scan_label_folders(tmp_path, "train")
    assert "split folders" in err.value.message
    assert str(tmp_path / "train") in err.value.hint and str(tmp_path / "val") in err.value.hint


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        scan_label_folders(tmp_path)


def test_table_paths_resolve_against_the_table_folder(tmp_path):
    assert resolve_image_path("img/a.png", tmp_path) == str(tmp_path / "img" / "a.png")
    assert resolve_image_path("/abs/a.png", tmp_path) == "/abs/a.png"
    assert resolve_image_path("https://x.org/a.png", tmp_path) == "https://x.org/a.png"
