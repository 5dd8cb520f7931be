"""`itm-onnx run --html`: one page with every input beside its HDR outputs.

The Chromium test opens the page from the file system in Debian's headless Chromium
(driven over the DevTools pipe, see tests/chromium.py) and checks that every image
decoded and that nothing reached the console as an error. It is marked ``chromium`` and
skipped, with the reason, where /usr/bin/chromium is absent (`.ci/run` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from .chromium import CHROMIUM, open_page
from .test_hdr_formats import scene
from .test_runner import META, affine_model, run_cli

FORMATS = ("uhdr", "avif", "png-pq")


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
        if tag in ("script", "link") and (attrs.get("src") or attrs.get("href")):
            self.external.append(attrs.get("src") or attrs.get("href"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, runner) -> tuple[Path, dict]:
    """Three inputs in one folder (PNG, JPEG with a space in its name, TIFF), converted
    to every display format into a folder beside it, with the page in a third folder."""
    root = tmp_path_factory.mktemp("page")
    model = affine_model(root / "dynamic.onnx", metadata=META)
    photos = root / "photos"
    photos.mkdir()
    _, photo = scene(40, 56)
    Image.fromarray(photo).save(photos / "a.png")
    Image.fromarray(photo[:, ::-1]).save(photos / "b c.jpg", quality=92)
    Image.fromarray(photo[::-1]).save(photos / "d.tif")  # no browser shows TIFF
    result = run_cli(runner, "-m", model, photos, "--format", ",".join(FORMATS),
                     "-o", root / "out", "--html", root / "pages" / "index.html", "--json")
    assert result.exit_code == 0, result.output
    return root / "pages" / "index.html", json.loads(result.stdout)


def test_page_shows_every_input_beside_its_outputs_by_relative_path(converted):
    page, report = converted
    assert report["html"] == str(page)
    parser = _Images()
    parser.feed(page.read_text(encoding="utf-8"))
    assert parser.external == []  # self-contained: works offline and from file://
    assert len(parser.sources) == 3 * (1 + len(FORMATS))
    for src in parser.sources:
        assert not re.match(r"^(/|[a-z]+:)", src), src  # relative, no scheme or root
        assert (page.parent / unquote(src)).is_file(), src
    expected = ["../photos/a.png", "../out/a.uhdr.jpg", "../out/a.avif", "../out/a.pq.png",
                "../photos/b%20c.jpg", "../out/b%20c.uhdr.jpg", "../out/b%20c.avif",
                "../out/b%20c.pq.png", "../out/d.input.png", "../out/d.uhdr.jpg",
                "../out/d.avif", "../out/d.pq.png"]
    assert parser.sources == expected
    with Image.open(page.parent / "../out/d.input.png") as preview:
        assert preview.size == (56, 40)


def test_page_survives_moving_page_and_folders_together(converted, tmp_path):
    page, _ = converted
    moved = tmp_path / "moved"
    shutil.copytree(page.parent.parent, moved, ignore=shutil.ignore_patterns("*.onnx"))
    parser = _Images()
    parser.feed((moved / "pages" / "index.html").read_text(encoding="utf-8"))
    assert all((moved / "pages" / unquote(src)).is_file() for src in parser.sources)


@pytest.mark.chromium
@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason=f"{CHROMIUM} is absent (Debian package chromium; .ci/run installs it)")
def test_page_decodes_every_image_in_headless_chromium(converted):
    page, _ = converted
    report = open_page(page)
    assert len(report.images) == 12
    broken = [(i["src"], i["error"]) for i in report.images if not i["naturalWidth"] > 0]
    assert broken == []
    assert all((i["naturalWidth"], i["naturalHeight"]) == (56, 40) for i in report.images)
    assert report.console_errors == []
    assert report.status.startswith("all 12 images decoded")  # the page's own check agrees


@pytest.mark.chromium
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent")
def test_the_chromium_check_sees_a_broken_image(tmp_path):
    """The check above can fail: a page with a missing and a corrupt image does."""
    (tmp_path / "corrupt.avif").write_bytes(b"\x00\x00\x00\x1cftypavif" + bytes(64))
    (tmp_path / "p.html").write_text('<img src="missing.png"><img src="corrupt.avif">')
    report = open_page(tmp_path / "p.html")
    assert [i["naturalWidth"] for i in report.images] == [0, 0]
    assert any("missing.png" in line for line in report.console_errors)
