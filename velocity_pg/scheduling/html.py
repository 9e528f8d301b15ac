"""The status page as HTML: one self-contained document (pure; no network at all).

The charts are drawn by pygal on the server as SVG and inlined; pygal's default
configuration links its tooltips' JavaScript from a CDN, so every chart is rendered with
``js=[]``: the page loads nothing from anywhere (no script, no font, no style sheet) and
works the same served by ``velocity-pg serve`` or saved by ``report --html``.
"""

from __future__ import annotations

import re
from datetime import datetime
from html import escape
from typing import Any

from velocity_pg.scheduling.page import Page, Point
from velocity_pg.store import catalog

SCRIPT = re.compile(r"<script\b.*?</script>", re.DOTALL | re.IGNORECASE)
COLOURS = {"green": "#1a7f37", "amber": "#b7791f", "red": "#c62828"}
#: Up to this many points a series shows a dot per run.
DOTS_UP_TO = 120
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
MARK_COLOURS = {"success": "#1f6feb", "failure": "#c62828", "skipped": "#b7791f"}

STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:12px;
color:#1f2328;background:#f6f8fa;line-height:1.4}
main{max-width:1100px;margin:0 auto}
h1{font-size:1.3rem;margin:.2rem 0 .6rem}
h2{font-size:1.05rem;margin:1.2rem 0 .4rem}
.banner{padding:.7rem 1rem;border-radius:6px;color:#fff;font-weight:600;overflow-wrap:anywhere}
dl.facts{display:grid;grid-template-columns:minmax(7rem,max-content) 1fr;gap:.25rem .8rem;
background:#fff;padding:.8rem;border-radius:6px;margin:.8rem 0}
dl.facts dt{font-weight:600}
dl.facts dd{margin:0;overflow-wrap:anywhere}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:.8rem}
figure{margin:0;background:#fff;border-radius:6px;padding:.4rem;min-width:0}
figcaption{font-weight:600;font-size:.9rem;padding:.2rem .4rem}
figure svg{width:100%;height:auto;display:block}
.table{overflow-x:auto;background:#fff;border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #d0d7de;white-space:nowrap}
td.num,th.num{text-align:right}
.none{color:#8c959f}
.bad{color:#c62828;font-weight:600}
@media (max-width:600px){dl.facts{grid-template-columns:1fr;gap:0}
dl.facts dd{margin-bottom:.5rem}body{padding:8px}}
footer{color:#57606a;font-size:.8rem;margin:1rem 0}
"""


def _chart(title: str, series: list[Point], unit: str, scale: float = 1.0) -> str:
    """A date-time chart of one series, its failed and skipped runs marked (pygal, SVG)."""
    import pygal  # type: ignore[import-untyped]
    from pygal.style import Style  # type: ignore[import-untyped]

    style = Style(
        background="white",
        plot_background="white",
        colors=(MARK_COLOURS["success"], MARK_COLOURS["failure"], MARK_COLOURS["skipped"]),
        font_family="sans-serif",
        label_font_size=13,
        major_label_font_size=13,
        legend_font_size=14,
        value_font_size=13,
        no_data_font_size=20,
    )
    chart = pygal.DateTimeLine(
        js=[],  # no CDN script: the page must work without internet
        disable_xml_declaration=True,
        style=style,
        width=520,
        height=330,
        show_legend=True,
        legend_at_bottom=True,
        x_label_rotation=25,
        max_scale=6,
        x_value_formatter=lambda d: d.strftime("%m-%d %H:%M"),
        value_formatter=lambda v: f"{v:.3g}",
        y_title=unit,
        truncate_label=-1,
        no_data_text="no data yet",
        dots_size=3,
    )

    def value(p: Point, fallback: float) -> float:
        return (p.value if p.value is not None else fallback) / scale

    ok = [(p.at, value(p, 0)) for p in series if p.mark == "success" and p.value is not None]
    failed = [(p.at, value(p, 0)) for p in series if p.mark == "failure"]
    skipped = [(p.at, 0.0) for p in series if p.mark == "skipped"]
    moments = sorted(p.at for p in series)
    if moments:  # at most 5 labels on the time axis, evenly spaced over the history
        first, last = moments[0], moments[-1]
        count = 5 if last > first else 1
        step = (last - first) / max(count - 1, 1)
        chart.x_labels = [first + step * i for i in range(count)]
    # Many runs: the line alone (a dot per run would be most of the page); the failed and
    # skipped runs keep their marks.
    chart.add(title, ok, show_dots=len(ok) <= DOTS_UP_TO)
    if failed:
        chart.add("failed run", failed, stroke=False, dots_size=6)
    if skipped:
        chart.add("skipped run", skipped, stroke=False, dots_size=6)
    svg: str = chart.render(is_unicode=True)
    # pygal leaves a script holding its configuration for the tooltips it did not load:
    # the page runs no script at all (its Content-Security-Policy says so).
    return COMMENT.sub("", SCRIPT.sub("", svg))


def _scale(series: list[Point]) -> tuple[float, str]:
    top = max((p.value for p in series if p.value is not None), default=0.0)
    for factor, unit in ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if top >= factor:
            return float(factor), unit
    return 1.0, "bytes"


def charts(page: Page) -> list[tuple[str, str]]:
    """(caption, inline SVG) of each chart."""
    out = []
    scale, unit = _scale(page.sizes)
    out.append(("Backup size per run", _chart("backup size", page.sizes, unit, scale)))
    out.append(("Run duration", _chart("duration", page.durations, "seconds")))
    scale, unit = _scale(page.database_sizes)
    out.append(("Database size", _chart("database size", page.database_sizes, unit, scale)))
    out.append(("Off-site transfer time", _chart("push", page.offsite_seconds, "seconds")))
    return out


def _bytes(value: int | None) -> str:
    return "" if value is None else str(value)


def _size(value: int | None) -> str:
    return '<span class="none">-</span>' if value is None else escape(catalog.human_size(value))


def render(page: Page, *, title: str = "velocity-pg") -> str:
    """The whole page."""
    colour = COLOURS.get(page.colour, COLOURS["red"])
    db = escape(page.database or "every database")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        '<link rel="icon" href="data:,">',
        f"<title>{escape(title)}: backups of {db}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        f"<h1>Backups of {db}</h1>",
        f'<div class="banner" id="state" data-state="{escape(page.colour)}" '
        f'style="background:{colour}">{escape(page.headline)}</div>',
        '<dl class="facts" id="facts">',
    ]
    for key, value in page.facts:
        slug = key.lower().replace(" ", "-")
        parts.append(f'<dt>{escape(key)}</dt><dd data-fact="{escape(slug)}">{escape(value)}</dd>')
    parts.append('</dl><h2>History</h2><div class="charts">')
    for caption, svg in charts(page):
        parts.append(f"<figure><figcaption>{escape(caption)}</figcaption>{svg}</figure>")
    parts.append("</div>")
    parts.append(f'<h2>Backups ({len(page.rows)})</h2><div class="table"><table id="backups">')
    parts.append(
        "<thead><tr><th>Name</th><th>Database</th><th>Created (UTC)</th>"
        '<th class="num">Local</th><th class="num">Off-site</th><th>Pinned</th>'
        "<th>Contents</th><th>Verified</th></tr></thead><tbody>"
    )
    for row in page.rows:
        bad = ' class="bad"' if row.contents not in ("ok", "no statistics", "no manifest") else ""
        parts.append(
            f'<tr data-name="{escape(row.name)}"><td>{escape(row.name)}</td>'
            f"<td>{escape(row.database)}</td>"
            f"<td>{escape(row.created.strftime('%Y-%m-%d %H:%M:%S'))}</td>"
            f'<td class="num" data-local="{_bytes(row.local_size)}">{_size(row.local_size)}</td>'
            f'<td class="num" data-remote="{_bytes(row.remote_size)}">'
            f"{_size(row.remote_size)}</td>"
            f"<td>{escape(row.pinned)}</td><td{bad}>{escape(row.contents)}</td>"
            f"<td>{escape(row.verified)}</td></tr>"
        )
    parts.append("</tbody></table></div>")
    parts.append(
        f"<footer>Generated {escape(_stamp(page.now))} by velocity-pg; read-only. "
        '<a href="metrics">metrics</a> · <a href="healthz">healthz</a></footer>'
    )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def page_json(page: Page) -> dict[str, Any]:
    return page.to_json()
