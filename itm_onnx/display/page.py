"""The before/after page of ``itm-onnx run --html``: every input beside its HDR outputs.

One self-contained HTML file (no scripts or styles from elsewhere) whose image paths are
relative to the page, so the page works opened from the file system (``file://``) and
keeps working when the page and the folders move together. Chrome on an HDR screen
shows the Ultra HDR, AVIF and PQ PNG columns brighter than the input; elsewhere they
look like the input (Ultra HDR) or tone mapped by the browser (PQ).

A short inline script, run after every image has loaded or failed, writes into the
page how many images decoded (``naturalWidth > 0``) and whether the screen reports
HDR (``matchMedia('(dynamic-range: high)')``), so a user sees at once what to expect.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ..utils.atomic import atomic_output
from .formats import DISPLAY_DESCRIPTIONS
from .mapping import SDR_WHITE_NITS

# What <img> decodes in current browsers; other inputs get an 8-bit PNG preview.
BROWSER_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".apng", ".gif", ".webp",
                                    ".bmp", ".avif", ".ico"})


@dataclass
class PageEntry:
    """One row of the page: the input as shown, and its HDR outputs by format name."""

    name: str  # the input's file name, as the user knows it
    input_image: Path  # what the page shows as the input (the file or its preview)
    width: int
    height: int
    outputs: list[tuple[str, Path]] = field(default_factory=list)


def relative_url(target: Path, page: Path) -> str:
    """URL of ``target`` relative to the page's folder (percent-encoded, / separated)."""
    relative = os.path.relpath(Path(target).resolve(), Path(page).resolve().parent)
    return quote(Path(relative).as_posix())


_STYLE = """
body { background: #111; color: #ddd; font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin: 1.6em 0 .4em; }
.row { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; flex: 1 1 320px; max-width: 640px; }
figure img { width: 100%; height: auto; display: block; background: #000; }
figcaption { color: #aaa; font-size: .9em; padding: .2em 0; }
#status { padding: .5em .8em; background: #222; border-left: 4px solid #888; }
#status.ok { border-color: #3a3; } #status.bad { border-color: #c33; }
"""

_SCRIPT = """
(function () {
  const images = Array.from(document.querySelectorAll('img'));
  const status = document.getElementById('status');
  const settle = img => img.complete ? Promise.resolve()
      : new Promise(done => { img.addEventListener('load', done);
                              img.addEventListener('error', done); });
  Promise.all(images.map(settle)).then(() => {
    const broken = images.filter(img => !(img.naturalWidth > 0));
    const hdr = window.matchMedia('(dynamic-range: high)').matches;
    status.className = broken.length ? 'bad' : 'ok';
    status.textContent = (broken.length
        ? broken.length + ' of ' + images.length + ' images did not decode: '
          + broken.map(img => img.getAttribute('src')).join(', ')
        : 'all ' + images.length + ' images decoded')
      + '. This screen ' + (hdr ? 'reports HDR: the HDR columns should look brighter '
          + 'in the highlights.' : 'does not report HDR: the HDR columns look like SDR.');
    document.body.dataset.decoded = String(images.length - broken.length);
  });
})();
"""


def render_page(page: Path, entries: Sequence[PageEntry], peak_nits: float,
                title: str = "itm-onnx: before and after") -> str:
    """The page's HTML text (paths relative to ``page``)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>Each input photo beside its HDR versions: the photo's clip level at "
        f"{SDR_WHITE_NITS:g} cd/m&sup2; (SDR reference white), recovered highlights up to "
        f"{peak_nits:g} cd/m&sup2;. Open this page in Chrome on an HDR screen (HDR on in "
        "the system settings) to see them as HDR.</p>",
        '<p id="status">checking the images&hellip;</p>',
    ]
    for entry in entries:
        parts.append(f"<h2>{esc(entry.name)} <small>({entry.width}&times;{entry.height})"
                     "</small></h2>")
        parts.append('<div class="row">')
        parts.append(_figure(entry.input_image, page, "input (SDR)", entry))
        for name, path in entry.outputs:
            label = DISPLAY_DESCRIPTIONS.get(name, name)
            parts.append(_figure(path, page, f"{name}: {label}", entry))
        parts.append("</div>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def _figure(path: Path, page: Path, caption: str, entry: PageEntry) -> str:
    url = html.escape(relative_url(path, page), quote=True)
    size = _size_text(path)
    alt = html.escape(f"{entry.name}, {caption}", quote=True)
    return (f'<figure><a href="{url}"><img src="{url}" alt="{alt}" width="{entry.width}" '
            f'height="{entry.height}" loading="eager"></a>'
            f"<figcaption>{html.escape(caption)}{size}</figcaption></figure>")


def _size_text(path: Path) -> str:
    try:
        size = Path(path).stat().st_size
    except OSError:
        return ""
    return f", {size / 1e6:.2f} MB" if size >= 1e6 else f", {size / 1e3:.0f} kB"


def write_page(page: str | os.PathLike[str], entries: Sequence[PageEntry],
               peak_nits: float) -> Path:
    """Write the page atomically; its folder must exist."""
    target = Path(page)
    text = render_page(target, entries, peak_nits)
    with atomic_output(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
