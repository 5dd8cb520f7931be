"""PNG charts of the sensitivity study and of the mixed search's trade-off curve.

Drawn with Pillow like ``itm_onnx.bench.chart`` (no plotting dependency); same inputs
give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from ..bench.chart import _font
from ..utils.atomic import atomic_output
from .search import SearchReport
from .sensitivity import SensitivityReport

_INK = (30, 30, 30)
_GRID = (225, 225, 225)
_HARM = (196, 78, 82)
_GAIN = (52, 101, 164)
_ACT, _WEIGHT = "A", "W"
_PAD = 16


def sensitivity_chart(report: SensitivityReport, path: Path, title: str,
                      rows: int = 40) -> Path:
    """Most harmful tensors first: PSNR with only it quantized, and dB won back if only it
    stays float. ``rows`` tensors at most (the rest are counted in the footer)."""
    shown = report.tensors[:rows]
    label_w, panel_w, row_h = 360, 330, 18
    width = label_w + 2 * panel_w + 3 * _PAD
    height = 110 + row_h * max(1, len(shown)) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(16), _font(12)
    draw.text((_PAD, _PAD), title, fill=_INK, font=font)
    draw.text((_PAD, _PAD + 22),
              f"{len(report.tensors)} quantized tensors, {report.images} calibration image(s) "
              f"{report.shape[-2]}x{report.shape[-1]}; all quantized (emulated): "
              f"{report.all_quantized_emulated_db} dB vs float, 10-bit scale", fill=_INK,
              font=small)
    top = 80
    left_x, right_x = label_w + _PAD, label_w + panel_w + 2 * _PAD
    draw.text((left_x, top - 22), "PSNR with only this quantized (short bar: harmless)",
              fill=_INK, font=small)
    draw.text((right_x, top - 22), "dB won back if only this stays float", fill=_INK,
              font=small)
    ceiling = 100.0
    floor = min([t.only_quantized_db for t in shown] + [report.all_quantized_emulated_db])
    floor = max(0.0, floor - 5)
    max_gain = max([t.gain_if_float_db for t in shown] + [0.1])
    for k, t in enumerate(shown):
        y = top + k * row_h
        if k % 2 == 0:
            draw.rectangle([_PAD, y, width - _PAD, y + row_h - 1], fill=(248, 248, 248))
        kind = _ACT if t.kind == "activation" else _WEIGHT
        label = f"{kind} {t.part[0]} {_short(t.tensor, 46)}"
        draw.text((_PAD, y + 2), label, fill=_INK, font=small)
        harm = (ceiling - min(ceiling, t.only_quantized_db)) / (ceiling - floor)
        draw.rectangle([left_x, y + 3, left_x + (panel_w - 60) * harm, y + row_h - 4],
                       fill=_HARM)
        draw.text((left_x + (panel_w - 60) * harm + 4, y + 2), f"{t.only_quantized_db:.1f}",
                  fill=_INK, font=small)
        gain = max(0.0, t.gain_if_float_db) / max_gain
        draw.rectangle([right_x, y + 3, right_x + (panel_w - 60) * gain, y + row_h - 4],
                       fill=_GAIN)
        draw.text((right_x + (panel_w - 60) * gain + 4, y + 2), f"{t.gain_if_float_db:+.2f}",
                  fill=_INK, font=small)
    footer = top + len(shown) * row_h + 10
    more = len(report.tensors) - len(shown)
    draw.text((_PAD, footer), f"A activation, W weight; b backbone, h head. Bars: left "
              f"{ceiling:.0f} dB (no harm) down to {floor:.0f} dB; right 0 to "
              f"{max_gain:.2f} dB." + (f" {more} less harmful tensors not drawn." if more
                                        else ""), fill=_INK, font=small)
    return _save(image, path)


def tradeoff_chart(report: SearchReport, path: Path, title: str) -> Path:
    """Output PSNR against median latency of every configuration the search built."""
    points = [p for p in report.points if p.median_ms is not None]
    left, right, top, bottom = 80, 330, 60, 70
    width, height = 950, max(560, top + 32 * len(points) + 20)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(16), _font(12)
    draw.text((_PAD, _PAD), title, fill=_INK, font=font)
    if not points:
        draw.text((left, top), "no configuration was timed", fill=_INK, font=small)
        return _save(image, path)
    xs = [p.median_ms for p in points]
    ys = [p.psnr_db for p in points] + [report.target_db]
    x0, x1 = _span(min(xs), max(xs))
    y0, y1 = _span(min(ys), max(ys))
    plot_w, plot_h = width - left - right, min(height, 560) - top - bottom

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + plot_w * (x - x0) / (x1 - x0), top + plot_h * (1 - (y - y0) / (y1 - y0)))

    for k in range(6):
        gx = x0 + (x1 - x0) * k / 5
        gy = y0 + (y1 - y0) * k / 5
        px, _ = at(gx, y0)
        _, py = at(x0, gy)
        draw.line([(px, top), (px, top + plot_h)], fill=_GRID)
        draw.line([(left, py), (left + plot_w, py)], fill=_GRID)
        draw.text((px - 14, top + plot_h + 6), f"{gx:.1f}", fill=_INK, font=small)
        draw.text((left - 46, py - 7), f"{gy:.1f}", fill=_INK, font=small)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=_INK)
    draw.text((left + plot_w // 2 - 80, top + plot_h + 26), "median latency, ms", fill=_INK,
              font=small)
    draw.text((_PAD, top - 20), "output PSNR vs float, dB (10-bit)", fill=_INK, font=small)
    _, ty = at(x0, report.target_db)
    draw.line([(left, ty), (left + plot_w, ty)], fill=_HARM, width=2)
    draw.text((left + 4, ty - 16), f"target {report.target_db} dB", fill=_HARM, font=small)
    frontier = _frontier(points)
    if len(frontier) > 1:
        draw.line([at(p.median_ms, p.psnr_db) for p in frontier], fill=_GAIN, width=2)
    chosen = report.chosen.get("label")
    legend_y = top
    for k, p in enumerate(sorted(points, key=lambda p: (p.median_ms, p.psnr_db))):
        cx, cy = at(p.median_ms, p.psnr_db)
        is_chosen = p.choice.get("label") == chosen
        r = 7 if is_chosen else 4
        colour = _HARM if is_chosen else _GAIN if p.meets_target else (120, 120, 120)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        draw.text((cx + 6, cy - 14), str(k + 1), fill=_INK, font=small)
        text = f"{k + 1}: {p.choice.get('label')}" + ("  (chosen)" if is_chosen else "")
        draw.text((left + plot_w + 12, legend_y), text[:52], fill=colour, font=small)
        draw.text((left + plot_w + 24, legend_y + 14), f"{p.psnr_db:.2f} dB, {p.median_ms:.1f} ms",
                  fill=_INK, font=small)
        legend_y += 32
    return _save(image, path)


def _frontier(points):
    """The Pareto front: no other point is both faster and more faithful."""
    front, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (p.median_ms, -p.psnr_db)):
        if p.psnr_db > best:
            front.append(p)
            best = p.psnr_db
    return front


def _span(low: float, high: float) -> tuple[float, float]:
    margin = max((high - low) * 0.08, abs(high) * 0.01, 0.5)
    return low - margin, high + margin


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def _save(image: Image.Image, path: Path) -> Path:
    with atomic_output(Path(path)) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
