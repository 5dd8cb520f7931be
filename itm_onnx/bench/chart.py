"""A PNG chart of the benchmark: median latency (bar, min..p90 whisker) and peak RSS.

Drawn with Pillow (already a dependency) rather than adding matplotlib for two bar charts.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..utils.atomic import atomic_output
from .core import Row

_WIDTH, _ROW_H, _LABEL_W, _PAD = 1100, 30, 330, 16
_BAR = (52, 101, 164)
_BAR2 = (115, 160, 90)
_INK = (30, 30, 30)
_GRID = (225, 225, 225)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def draw_chart(rows: list[Row], path: Path, title: str) -> Path:
    """Write the chart for the rows that ran; returns ``path``."""
    done = [r for r in rows if r.median_ms is not None]
    panel_h = _ROW_H * max(1, len(done)) + 50
    image = Image.new("RGB", (_WIDTH, 60 + 2 * panel_h + _PAD), "white")
    draw = ImageDraw.Draw(image)
    draw.text((_PAD, _PAD), title, fill=_INK, font=_font(18))
    top = 50
    _panel(draw, done, top, "median latency, ms (whisker: min..p90)",
           lambda r: r.median_ms, lambda r: (r.min_ms, r.p90_ms), _BAR)
    _panel(draw, done, top + panel_h, "peak RSS, MB (child process per model)",
           lambda r: r.peak_rss_mb, lambda r: None, _BAR2)
    with atomic_output(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def _panel(draw, rows, top, heading, value, whisker, colour) -> None:
    font = _font(14)
    draw.text((_PAD, top), heading, fill=_INK, font=font)
    values = [value(r) for r in rows]
    extents = [w[1] for r in rows if (w := whisker(r)) and w[1] is not None]
    scale_max = max([v for v in values if v is not None] + extents + [1e-9])
    plot_w = _WIDTH - _LABEL_W - 2 * _PAD - 80
    for k, (row, v) in enumerate(zip(rows, values, strict=True)):
        y = top + 24 + k * _ROW_H
        label = f"{row.label} [{row.size} {row.ep}]"
        draw.text((_PAD, y + 6), label[:44], fill=_INK, font=font)
        x0 = _LABEL_W
        draw.line([(x0, y), (x0, y + _ROW_H - 4)], fill=_GRID)
        if v is None:
            draw.text((x0 + 6, y + 6), "n/a", fill=_INK, font=font)
            continue
        x1 = x0 + plot_w * v / scale_max
        draw.rectangle([x0, y + 4, x1, y + _ROW_H - 8], fill=colour)
        text_x = x1
        w = whisker(row)
        if w and w[0] is not None and w[1] is not None:
            xa, xb = x0 + plot_w * w[0] / scale_max, x0 + plot_w * w[1] / scale_max
            ym = y + (_ROW_H - 4) // 2
            draw.line([(xa, ym), (xb, ym)], fill=_INK, width=2)
            draw.line([(xa, ym - 5), (xa, ym + 5)], fill=_INK, width=2)
            draw.line([(xb, ym - 5), (xb, ym + 5)], fill=_INK, width=2)
            text_x = max(x1, xb)
        ratio = row.ratio_to_first if heading.startswith("median") else None
        text = f"{v:,.0f}" + (f"  x{ratio:.2f}" if ratio else "")
        draw.text((text_x + 8, y + 6), text, fill=_INK, font=font)
