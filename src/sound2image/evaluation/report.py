"""The evaluation report: one self-contained ``report.html`` rendered from ``results.json``.

:func:`write_report` turns the results dictionary of ``sound2image evaluate`` (the ``results.json``
format, version 1) into a page that opens offline and makes no request:

- the comparison grid like the paper's Table 1: one row per clip (its class, a playable ``<audio>``
  element, the real image), then one column per system × condition with its generated images;
- the metrics table (FID, KID, AIC, AIC@k, AIS, IIS, each ``value [low, high]`` with its N) and the
  dataset's own ceiling (real images) and floor (shuffled pairs);
- a per-class AIC plot (matplotlib, Agg, an inline PNG) and its numbers;
- how to read each metric, the settings, package version, command, model revisions and bad items.

Everything is embedded as ``data:`` URIs and a Content-Security-Policy forbids any other source, so
the page cannot load anything from the network even by mistake.

Numbers: every metric number shown is one element carrying ``data-key`` (``metrics/<system>/<metric>/
<field>``, ``reference/<real|shuffled>/<metric>/<field>`` or ``per_class_aic/<system>/<class>/<field>``;
field is ``value``, ``low``, ``high`` or ``n``), and its text is :func:`format_number` of the value in
``results``. A key's segments are the dictionary keys with ``%`` written ``%25`` and ``/`` written
``%2F`` (system ids and pairing names may contain ``/``); :func:`parse_key` inverts it.

Only the results dictionary and the files it names (audio, real images, generated images; relative
paths are relative to ``out_dir``) are read. A file that cannot be read becomes a note in its cell
and in the page's list of unreadable files; the report is still written.
"""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sound2image.atomic import write_text_atomic
from sound2image.audio import load_audio
from sound2image.data.images import load_image
from sound2image.errors import Sound2ImageError, UsageError
from sound2image.validation import check_int

__all__ = [
    "AUDIO_MAX_SECONDS",
    "AUDIO_SAMPLE_RATE",
    "METRIC_COLUMNS",
    "THUMBNAIL_PX",
    "format_number",
    "make_key",
    "parse_key",
    "write_report",
]

#: Audio is embedded as 16-bit mono FLAC at this rate (Hz): what the audio encoders hear, and compact.
AUDIO_SAMPLE_RATE = 16000
#: At most this many seconds of each clip are embedded (the page says so when a clip is cropped).
AUDIO_MAX_SECONDS = 30.0
#: Images larger than this (longest side, pixels) are shrunk to it and embedded as JPEG; smaller ones
#: are embedded as they are, as PNG (lossless: 32×32 digits stay exact).
THUMBNAIL_PX = 160
#: The size (CSS pixels, longest side) at which a thumbnail is shown.
DISPLAY_PX = 128
#: The metrics table's standard columns, in order (``aic@k`` is named after the run's k).
METRIC_COLUMNS = ("fid", "kid", "aic", "aic@k", "ais", "iis")
_TITLES = {
    "fid": "FID",
    "kid": "KID",
    "aic": "AIC",
    "ais": "AIS",
    "iis": "IIS",
    "per_class_aic": "AIC per class",
    "reference": "Ceiling and floor",
}
_LOWER_IS_BETTER = {"fid", "kid"}
_FIELDS = ("value", "low", "high", "n")
_DASH = "\u2014"


# --- numbers and keys ------------------------------------------------------------------------------


def format_number(value: float | int) -> str:
    """The one way the report writes a number: 4 significant digits, Python's ``format(value, ".4g")``.

    Integers (the N of an estimate) are written in full. Examples: ``0.123456 -> "0.1235"``,
    ``1.0 -> "1"``, ``123456.7 -> "1.235e+05"``, ``1.5e-05 -> "1.5e-05"``, ``nan -> "nan"``, ``12 -> "12"``.
    The text parses back with ``float()`` to within half a unit of the 4th significant digit.
    """
    if isinstance(value, bool):
        raise UsageError(f"value must be a number, got {value!r}", parameters=("value",))
    if isinstance(value, int):
        return str(value)
    return format(float(value), ".4g")


def _quote(segment: str) -> str:
    return segment.replace("%", "%25").replace("/", "%2F")


def make_key(*segments: str) -> str:
    """``data-key`` of a number: the dictionary keys leading to it in ``results``, joined by ``/``.

    ``%`` in a segment is written ``%25`` and ``/`` is written ``%2F``, so that ids with slashes
    (``transformer:runs/it/model``) stay one segment: ``make_key("metrics", "a/b", "fid", "value")
    == "metrics/a%2Fb/fid/value"``.
    """
    return "/".join(_quote(str(segment)) for segment in segments)


def parse_key(key: str) -> list[str]:
    """The dictionary keys of a ``data-key`` (the inverse of :func:`make_key`)."""
    return [segment.replace("%2F", "/").replace("%25", "%") for segment in key.split("/")]


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _check_estimate(estimate: object, where: str) -> Mapping[str, Any]:
    """An Estimate dict (value, low, high: numbers; n: int), or a one-line UsageError naming where it is."""
    ok = isinstance(estimate, Mapping) and all(
        isinstance(estimate.get(f), (int, float)) and not isinstance(estimate.get(f), bool) for f in _FIELDS
    )
    if not ok or not isinstance(estimate["n"], int):  # type: ignore[index]
        raise UsageError(
            f"results{where} is not an Estimate (value, low, high: numbers; n: an integer), got {estimate!r}",
            parameters=("results",),
        )
    return estimate  # type: ignore[return-value]


def _number(value: float | int, key: str) -> str:
    return f'<span class="num" data-key="{_esc(key)}">{_esc(format_number(value))}</span>'


def _estimate_html(estimate: Mapping[str, Any], *keys: str) -> str:
    """``value [low, high]`` and ``N = n``, every number its own element with its data-key."""
    k = [make_key(*keys, field) for field in _FIELDS]
    return (
        f'<span class="est">{_number(estimate["value"], k[0])} '
        f'<span class="ci">[{_number(estimate["low"], k[1])}, {_number(estimate["high"], k[2])}]</span>'
        f' <span class="n">N = {_number(estimate["n"], k[3])}</span></span>'
    )


# --- embedded media --------------------------------------------------------------------------------


def _resolve(path: object, out_dir: Path) -> Path:
    path = Path(str(path))
    return path if path.is_absolute() else out_dir / path


def _image_tag(path: Path, alt: str, problems: list[str]) -> str:
    """An ``<img>``, the image as a data: URI (PNG if small, else a JPEG thumbnail); a note if unreadable."""
    try:
        image = load_image(path, mode=None)
    except Sound2ImageError as error:
        problems.append(str(error))
        return f'<span class="missing">{_esc(error)}</span>'
    from PIL import Image

    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    small = max(image.size) <= THUMBNAIL_PX
    if small:
        image.save(buffer, format="PNG", optimize=True)
        mime = "image/png"
    else:
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
        image.save(buffer, format="JPEG", quality=85)
        mime = "image/jpeg"
    scale = DISPLAY_PX / max(image.size)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    css = ' class="thumb pixelated"' if small else ' class="thumb"'
    return (
        f'<img{css} src="data:{mime};base64,{data}" width="{width}" height="{height}" '
        f'alt="{_esc(alt)}" title="{_esc(alt)}">'
    )


def _audio_tag(path: Path, problems: list[str]) -> str:
    """An ``<audio controls>`` with the clip as 16-bit mono FLAC at 16 kHz (at most AUDIO_MAX_SECONDS)."""
    import soundfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a silent or oddly-ended clip is still worth hearing
            clip = load_audio(path, AUDIO_SAMPLE_RATE, max_duration=None)
    except Sound2ImageError as error:
        problems.append(str(error))
        return f'<span class="missing">{_esc(error)}</span>'
    samples = np.asarray(clip.samples, dtype=np.float32)
    limit = int(AUDIO_MAX_SECONDS * AUDIO_SAMPLE_RATE)
    cropped = samples.shape[0] > limit
    samples = np.clip(samples[:limit], -1.0, 1.0)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, AUDIO_SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    note = f'<div class="small">first {format_number(AUDIO_MAX_SECONDS)} s</div>' if cropped else ""
    return (
        f'<audio controls preload="metadata" src="data:audio/flac;base64,{data}" '
        f'title="{_esc(path.name)}"></audio>{note}'
    )


# --- the per-class AIC plot ------------------------------------------------------------------------


def _plain(text: str) -> str:
    """Text for matplotlib, shown literally: ``$`` would otherwise start mathtext (and can fail to parse)."""
    return str(text).replace("$", r"\$")


def _per_class_plot(
    per_class: Mapping[str, Mapping[str, Mapping[str, Any]]],
    systems: Sequence[tuple[str, str]],
    classes: Sequence[str],
) -> str:
    """Grouped bars (one group per class, one bar per system) with their intervals, as an inline PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [(sid, label) for sid, label in systems if sid in per_class]
    width = min(16.0, max(6.0, 0.5 * len(classes) * max(1, len(shown)) + 2.0))
    figure = Figure(figsize=(width, 3.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = np.arange(len(classes), dtype=float)
    bar = 0.8 / max(1, len(shown))
    for index, (sid, label) in enumerate(shown):
        values, lower, upper = [], [], []
        for name in classes:
            estimate = per_class[sid].get(name)
            if estimate is None:
                values.append(np.nan)
                lower.append(0.0)
                upper.append(0.0)
            else:
                values.append(estimate["value"])
                lower.append(max(0.0, estimate["value"] - estimate["low"]))
                upper.append(max(0.0, estimate["high"] - estimate["value"]))
        offset = (index - (len(shown) - 1) / 2) * bar
        axes.bar(x + offset, values, bar, yerr=[lower, upper], capsize=2, label=_plain(label))
    if classes:
        axes.axhline(
            1.0 / len(classes), color="grey", linestyle="--", linewidth=1, label="chance (1/classes)"
        )
    axes.set_xticks(
        x,
        [_plain(c) for c in classes],
        rotation=30 if len(classes) > 6 else 0,
        ha="right" if len(classes) > 6 else "center",
    )
    axes.set_ylim(0.0, 1.05)
    axes.set_ylabel("AIC (share labelled with the audio's class)")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="plot" src="data:image/png;base64,{data}" alt="Per-class AIC of every system">'


# --- the page --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222;max-width:none}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0} th,td{border:1px solid #ccc;padding:4px 6px;vertical-align:top}
th{background:#f4f4f4;text-align:left} td.metric{white-space:nowrap;font-variant-numeric:tabular-nums}
.ci{color:#555;display:block;font-size:90%} .n{color:#777;font-size:85%} .small{font-size:85%;color:#555}
.missing{color:#a00;font-size:85%} .flag{color:#a60;font-weight:bold}
img.thumb{display:block} td.images{white-space:nowrap} img.pixelated{image-rendering:pixelated}
figure{display:inline-block;margin:0 4px 4px 0} figcaption{font-size:75%;color:#555;text-align:center}
tr.ref td{background:#fafaf0} pre{background:#f6f6f6;padding:.5em;overflow-x:auto;white-space:pre-wrap}
audio{width:220px} img.plot{max-width:100%}
"""

_CSP = "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'"


def _aic_at_k(results: Mapping[str, Any]) -> str:
    """The name of the AIC@k metric: ``aic@<settings.k>``, else the first ``aic@…`` key in the metrics."""
    k = results.get("settings", {}).get("k")
    if isinstance(k, int) and not isinstance(k, bool):
        return f"aic@{k}"
    for metrics in results.get("metrics", {}).values():
        for name in metrics:
            if name.startswith("aic@"):
                return name
    return "aic@k"


def _level(results: Mapping[str, Any]) -> str:
    """The intervals' confidence level as the page writes it (``95 %``), from settings.bootstrap.level."""
    level = (results.get("settings") or {}).get("bootstrap", {}).get("level", 0.95)
    return f"{format_number(100 * float(level))} %"


def _arrow(metric: str) -> str:
    """`` ↓`` for lower-is-better metrics, `` ↑`` for the known higher-is-better ones, else nothing."""
    if metric in _LOWER_IS_BETTER:
        return " ↓"
    return " ↑" if metric in ("aic", "ais", "iis") or metric.startswith("aic@") else ""


def _title(metric: str) -> str:
    if metric.startswith("aic@"):
        return "AIC@" + metric[4:]
    return _TITLES.get(metric, metric.upper())


def _pick_rows(items: Sequence[Mapping[str, Any]], max_rows: int) -> list[int]:
    """Indices of at most ``max_rows`` items, taken round-robin over the classes (so every class shows
    when there are enough rows), first items first, listed in the results' order."""
    by_class: dict[object, list[int]] = {}
    for index, item in enumerate(items):
        by_class.setdefault(item.get("label"), []).append(index)
    queues = list(by_class.values())
    chosen: list[int] = []
    depth = 0
    while len(chosen) < min(max_rows, len(items)):
        for queue in queues:
            if depth < len(queue) and len(chosen) < max_rows:
                chosen.append(queue[depth])
        depth += 1
    return sorted(chosen)


def _metrics_section(results: Mapping[str, Any], systems: Sequence[Mapping[str, Any]]) -> str:
    metrics: Mapping[str, Mapping[str, Any]] = results.get("metrics", {})
    reference: Mapping[str, Mapping[str, Any]] = results.get("reference", {})
    at_k = _aic_at_k(results)
    standard = [at_k if name == "aic@k" else name for name in METRIC_COLUMNS]
    extra = sorted(
        {name for m in metrics.values() for name in m if name not in standard}
        | {
            name.split(":", 1)[0]
            for ref in reference.values()
            for name in ref
            if name.split(":", 1)[0] not in standard
        }
    )
    columns = standard + extra
    head = "".join(f"<th>{_esc(_title(c))}{_arrow(c)}</th>" for c in columns)
    rows = []
    for system in systems:
        sid = str(system["id"])
        flag = (
            ' <span class="flag" title="best of N: AIS ranked the candidates">†</span>'
            if system.get("best_of_flag")
            else ""
        )
        cells = []
        for column in columns:
            estimate = metrics.get(sid, {}).get(column)
            if estimate is None:
                cells.append(f'<td class="metric">{_DASH}</td>')
            else:
                estimate = _check_estimate(estimate, f"['metrics'][{sid!r}][{column!r}]")
                cells.append(f'<td class="metric">{_estimate_html(estimate, "metrics", sid, column)}</td>')
        rows.append(f"<tr><th>{_esc(system.get('label', sid))}{flag}</th>{''.join(cells)}</tr>")
    names = {"real": "Real images (ceiling)", "shuffled": "Shuffled pairs (floor)"}
    for kind in sorted(
        reference, key=lambda k: (k not in names, list(names).index(k) if k in names else 0, k)
    ):
        entries = reference[kind]
        groups: dict[str | None, dict[str, str]] = {}
        for name in entries:
            metric, _, pairing = name.partition(":")
            groups.setdefault(pairing or None, {})[metric] = name
        pairings = [p for p in groups if p is not None]
        if len(pairings) == 1 and None in groups:  # one pairing: one row for this reference
            groups = {pairings[0]: {**groups.pop(None), **groups[pairings[0]]}}
        for pairing in sorted(groups, key=lambda p: (p is not None, p or "")):
            label = names.get(kind, kind)
            if pairing:
                scored = "/".join(_title(m) for m, name in groups[pairing].items() if ":" in name)
                label += f'<div class="small">{_esc(scored)} in {_esc(pairing)}</div>'
            cells = []
            for column in columns:
                name = groups[pairing].get(column)
                if name is None:
                    cells.append(f'<td class="metric">{_DASH}</td>')
                else:
                    estimate = _check_estimate(entries[name], f"['reference'][{kind!r}][{name!r}]")
                    cells.append(
                        f'<td class="metric">{_estimate_html(estimate, "reference", kind, name)}</td>'
                    )
            rows.append(f'<tr class="ref"><th>{label}</th>{"".join(cells)}</tr>')
    flagged = [s for s in systems if s.get("best_of_flag")]
    note = ""
    if flagged:
        which = ", ".join(
            f"{_esc(s.get('label', s['id']))} (N = {_esc(s.get('candidates', '?'))})" for s in flagged
        )
        note = (
            f'<p><span class="flag">†</span> Best of N: {which} kept, of N candidates per seed, the image '
            "scored highest by the same image-encoder cosine that AIS uses. Its AIS is therefore optimistic; "
            "compare it on AIC, IIS, FID and KID.</p>"
        )
    notes = results.get("metric_notes") or {}
    notes_html = ""
    if notes:
        notes_html = (
            '<h3>Notes from the run</h3><ul id="metric-notes">'
            + "".join(f"<li><b>{_esc(_title(str(m)))}</b>: {_esc(text)}</li>" for m, text in notes.items())
            + "</ul>"
        )
    return (
        '<h2 id="metrics">Metrics</h2>'
        f"<p>Each cell: the value on all clips, its {_level(results)} bootstrap interval over clips "
        "[low, high], and N (the number of clips). ↓ lower is better, ↑ higher is better. Numbers have 4 "
        "significant digits "
        f'(results.json has the full values).</p><table id="metrics-table"><thead><tr><th>System</th>{head}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}{notes_html}"
    )


def _how_to_read(results: Mapping[str, Any]) -> str:
    settings = results.get("settings", {})
    k = settings.get("k", "k")
    features = settings.get("features", "?")
    return (
        '<h2 id="how-to-read">How to read the metrics</h2><ul>'
        f"<li><b>FID</b> and <b>KID</b> (lower is better): how far the generated images' feature "
        f"distribution is from the real images' (features: {_esc(features)}). 0 = indistinguishable. KID is "
        "unbiased and the better one for small N; FID falls as N grows, so compare FIDs only at equal N.</li>"
        "<li><b>AIC</b> (higher is better): the share of generated images that an independent classifier, "
        "trained on the dataset's training images, labels with the audio's class. Chance is 1 / number of "
        f"classes; the real images' AIC is the ceiling. <b>AIC@{_esc(k)}</b>: the audio's class is among the "
        f"classifier's top {_esc(k)}.</li>"
        "<li><b>AIS</b> (higher is better): for each clip, the share of other clips whose audio is less "
        "similar to the generated image than its own audio is (a win-rate; ties count ½). 0.5 = chance, "
        "1 = every image is closest to its own sound. The shuffled pairs' AIS is the floor (≈ 0.5), the real "
        "images' the ceiling.</li>"
        "<li><b>IIS</b> (higher is better): the same win-rate, with the real paired images in place of the "
        "audio: is the generated image closer to its own clip's real image than to the others? 0.5 = chance."
        "</li>"
        f"<li>The intervals are {_level(results)} percentile-bootstrap intervals over clips (all seeds of a "
        "clip are resampled together). Two systems whose intervals overlap widely are not shown apart by "
        "this N.</li>"
        "<li>For SounDiff, AIS compares ImageBind audio embeddings with the pipeline's own image embeddings: "
        "the space the images were conditioned in. It measures how well the image follows the conditioning, "
        "not an independent judgement; AIC and IIS are independent of it.</li></ul>"
    )


def _grid_section(
    results: Mapping[str, Any],
    systems: Sequence[Mapping[str, Any]],
    out_dir: Path,
    max_rows: int,
    problems: list[str],
) -> str:
    items: Sequence[Mapping[str, Any]] = results.get("items", [])
    rows = _pick_rows(items, max_rows)
    head = ["<th>Class</th>", "<th>Audio</th>", "<th>Real image</th>"]
    for system in systems:
        sub = ""
        if system.get("condition") is not None:
            sub = f'<div class="small">condition: {_esc(system["condition"])}</div>'
        flag = ' <span class="flag">†</span>' if system.get("best_of_flag") else ""
        head.append(f'<th class="system">{_esc(system.get("label", system["id"]))}{flag}{sub}</th>')
    body = []
    for index in rows:
        item = items[index]
        label = item.get("label")
        name = _esc(item.get("id", index))
        real_alt = f"real image of {item.get('id', index)}"
        cells = [
            f'<td>{_esc(label) if label is not None else _DASH}<div class="small">{name}</div></td>',
            f"<td>{_audio_tag(_resolve(item['audio'], out_dir), problems)}</td>",
            f"<td>{_image_tag(_resolve(item['real_image'], out_dir), real_alt, problems)}</td>",
        ]
        images: Mapping[str, Any] = item.get("images", {})
        for system in systems:
            sid = str(system["id"])
            entries = sorted(images.get(sid, []), key=lambda e: (e.get("seed") is None, e.get("seed") or 0))
            if not entries:
                cells.append('<td><span class="missing">not generated</span></td>')
                continue
            figures = []
            for entry in entries:
                alt = f"{system.get('label', sid)}, {item.get('id')}, seed {entry.get('seed')}"
                tag = _image_tag(_resolve(entry["path"], out_dir), alt, problems)
                figures.append(
                    f"<figure>{tag}<figcaption>seed {_esc(entry.get('seed'))}</figcaption></figure>"
                )
            cells.append(f'<td class="images">{"".join(figures)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        '<h2 id="grid">Comparison (like the paper\'s Table 1)</h2>'
        f'<p>Showing <span id="rows-shown">{len(rows)}</span> of <span id="rows-total">{len(items)}</span> '
        "clips (taken in turn from each class). One column per system × condition; one image per seed.</p>"
        f'<table id="grid-table"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _per_class_section(results: Mapping[str, Any], systems: Sequence[Mapping[str, Any]]) -> str:
    per_class: Mapping[str, Mapping[str, Any]] = results.get("per_class_aic") or {}
    if not per_class:
        return ""
    classes = list(results.get("data", {}).get("classes") or [])
    for estimates in per_class.values():
        classes += [c for c in estimates if c not in classes]
    for sid, estimates in per_class.items():
        for name, estimate in estimates.items():
            _check_estimate(estimate, f"['per_class_aic'][{sid!r}][{name!r}]")
    known = [(str(s["id"]), str(s.get("label", s["id"]))) for s in systems]
    known += [(sid, sid) for sid in per_class if sid not in {k for k, _ in known}]
    plot = _per_class_plot(per_class, known, classes)
    head = "".join(f"<th>{_esc(label)}</th>" for sid, label in known if sid in per_class)
    rows = []
    for name in classes:
        cells = []
        for sid, _ in known:
            if sid not in per_class:
                continue
            estimate = per_class[sid].get(name)
            cell = _DASH if estimate is None else _estimate_html(estimate, "per_class_aic", sid, name)
            cells.append(f'<td class="metric">{cell}</td>')
        rows.append(f"<tr><th>{_esc(name)}</th>{''.join(cells)}</tr>")
    return (
        '<h2 id="per-class">AIC per class</h2>'
        "<p>The share of each class's generated images that the classifier labels with that class, with "
        f"{_level(results)} intervals; the dashed line is chance.</p>"
        f'{plot}<details><summary>The numbers</summary><table id="per-class-table"><thead><tr><th>Class</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
    )


def _json_pre(value: object) -> str:
    return f"<pre>{_esc(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))}</pre>"


def _settings_section(results: Mapping[str, Any], systems: Sequence[Mapping[str, Any]]) -> str:
    data = results.get("data", {})
    rows = []
    for system in systems:
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{_esc(system.get(field)) if system.get(field) is not None else _DASH}</td>"
                for field in ("id", "label", "kind", "source", "condition", "candidates", "fingerprint")
            )
            + f"<td>{_json_pre(system.get('model', {}))}</td></tr>"
        )
    return (
        '<h2 id="settings">Settings</h2><dl>'
        f"<dt>Command</dt><dd><pre>{_esc(results.get('command', _DASH))}</pre></dd>"
        f"<dt>Package</dt><dd>sound2image {_esc(results.get('package_version', '?'))}; results.json "
        f"format {_esc(results.get('format', '?'))} version {_esc(results.get('version', '?'))}; created "
        f"{_esc(results.get('created', '?'))}</dd>"
        f"<dt>Data</dt><dd>{_json_pre(data)}</dd>"
        f"<dt>Settings</dt><dd>{_json_pre(results.get('settings', {}))}</dd></dl>"
        '<h3>Systems and model revisions</h3><table id="systems-table"><thead><tr><th>id</th><th>label</th>'
        "<th>kind</th><th>source</th><th>condition</th><th>candidates</th><th>fingerprint</th><th>model</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _problems_section(results: Mapping[str, Any], problems: Sequence[str]) -> str:
    bad = results.get("bad_items") or []
    parts = ['<h2 id="bad-items">Bad items</h2>']
    if bad:
        parts.append(
            f'<p>{len(bad)} item(s) were skipped by the run:</p><ul id="bad-items-list">'
            + "".join(f"<li>{_esc(b.get('item', '?'))}: {_esc(b.get('problem', '?'))}</li>" for b in bad)
            + "</ul>"
        )
    else:
        parts.append("<p>None: every item was scored.</p>")
    if problems:
        parts.append(
            '<p>Files this report could not embed:</p><ul id="report-problems">'
            + "".join(f"<li>{_esc(p)}</li>" for p in dict.fromkeys(problems))
            + "</ul>"
        )
    return "".join(parts)


def _check_results(results: object) -> list[Mapping[str, Any]]:
    if not isinstance(results, Mapping):
        raise UsageError(
            f"results must be a dict (results.json), got {type(results).__name__}", parameters=("results",)
        )
    if results.get("format") != "sound2image-evaluation":
        raise UsageError(
            f"results is not a sound2image evaluation (format {results.get('format')!r}, "
            "expected 'sound2image-evaluation')",
            parameters=("results",),
        )
    version = results.get("version")
    if version != 1:
        raise UsageError(
            f"results has version {version!r}; this sound2image reads version 1 (upgrade sound2image)",
            parameters=("results",),
        )
    systems = results.get("systems")
    if not isinstance(systems, list) or not all(isinstance(s, Mapping) and "id" in s for s in systems):
        raise UsageError(
            "results['systems'] must be a list of systems, each with an 'id'", parameters=("results",)
        )
    ids = [str(s["id"]) for s in systems]
    if len(set(ids)) != len(ids):
        raise UsageError(f"results['systems'] has repeated ids: {ids}", parameters=("results",))
    for index, item in enumerate(results.get("items", [])):
        if not isinstance(item, Mapping) or "audio" not in item or "real_image" not in item:
            raise UsageError(
                f"results['items'][{index}] needs 'audio' and 'real_image' paths", parameters=("results",)
            )
    return list(systems)


def write_report(results: dict, out_dir: Path, *, max_rows: int = 24) -> Path:
    """Write ``out_dir/report.html``, a self-contained page of an evaluation's results.

    Args:
        results: the ``results.json`` dictionary (format ``sound2image-evaluation``, version 1).
            Optional parts (``reference``, ``per_class_aic``, ``metric_notes``, ``bad_items``) may be
            absent; a metric absent for a system shows as a dash.
        out_dir: the folder to write into (created if needed); relative image paths in ``results`` are
            relative to it. An existing ``report.html`` there is replaced (atomically).
        max_rows: at most this many clips in the comparison grid (>= 1), taken in turn from each class;
            the page says how many of how many are shown.

    Returns:
        The path of ``report.html``.

    Raises:
        UsageError: ``max_rows`` is not an integer >= 1, or ``results`` is not a version-1 evaluation
            results dictionary (or an estimate in it lacks value/low/high/n). One line naming the part.

    An unreadable audio or image file does not stop the report: its cell and the "Bad items" section
    name it.
    """
    try:
        max_rows = check_int("max_rows", max_rows, minimum=1)
    except UsageError as error:
        raise UsageError(str(error), parameters=("max_rows",)) from None
    systems = _check_results(results)
    out_dir = Path(out_dir)
    problems: list[str] = []
    metrics = _metrics_section(results, systems)
    per_class = _per_class_section(results, systems)
    grid = _grid_section(results, systems, out_dir, max_rows, problems)
    data = results.get("data", {})
    summary = (
        f"<p>{_esc(len(systems))} system(s) on {_esc(data.get('n_items', len(results.get('items', []))))} "
        f"clip(s) of {_esc(data.get('path', '?'))} (split {_esc(data.get('split', '?'))}); seeds "
        f"{_esc(', '.join(str(s) for s in results.get('settings', {}).get('seeds', [])) or '?')}. "
        '<a href="#metrics">Metrics</a> · <a href="#per-class">per class</a> · <a href="#grid">images</a> · '
        '<a href="#how-to-read">how to read</a> · <a href="#settings">settings</a></p>'
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>sound2image evaluation</title>"
        # An empty icon: otherwise the browser asks for /favicon.ico, which the policy (rightly) blocks.
        '<link rel="icon" href="data:,">'
        f"<style>{_CSS}</style></head><body>"
        "<h1>sound2image evaluation</h1>"
        f"{summary}{metrics}{_how_to_read(results)}{per_class}{grid}{_settings_section(results, systems)}"
        f"{_problems_section(results, problems)}</body></html>\n"
    )
    return write_text_atomic(out_dir / "report.html", page)
