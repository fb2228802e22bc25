"""A small synthetic ``results.json`` (contract section C) for the report tests, and an HTML tree reader.

The items are five real clips and images of ``../shared/data/pseudo-advance`` (three classes); the
"generated" images are seeded noise PNGs written into ``tmp_path/cache`` (paths relative to the out
dir, as the evaluation run writes them). The numbers are chosen to exercise the number format: large,
tiny, negative, integral and 6-significant-digit values.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
from PIL import Image

from tests.paths import PSEUDO_ADVANCE

#: (class, file stem) of the five items: 2 airport, 2 beach, 1 forest.
ITEMS = [
    ("airport", "00001"),
    ("airport", "00002"),
    ("beach", "00017"),
    ("beach", "00018"),
    ("forest", "00069"),
]
CLASSES = ["airport", "beach", "forest"]
PAIRING = "imagebind-audio/unclip-clip-image"
#: Labels and texts with HTML in them: the page must show them as text.
EVIL_LABEL = 'Baseline <b>bold</b> & "quoted"'
EVIL_CONDITION = 'a satellite image <script>alert("x")</script>'
EVIL_BAD_ITEM = "sound/<img src=x onerror=alert(1)>.wav"
#: system id, label, condition, best_of_flag, candidates, (image size, mode), seeds
SYSTEMS = [
    ("baseline", EVIL_LABEL, None, False, 1, ((200, 150), "RGB"), [1]),
    ("runs/soundiff-s+cond", "SounDiff-S + condition", EVIL_CONDITION, True, 4, ((64, 64), "RGB"), [1]),
    ("transformer:runs/it/model", "Image Transformer", None, False, 1, ((32, 32), "L"), [1, 2]),
]


def _estimate(rng: np.random.Generator, scale: float, n: int) -> dict[str, float | int]:
    value = float(f"{scale * rng.uniform(0.2, 1.0):.6g}")
    spread = abs(value) * 0.2 + 1e-9
    return {
        "value": value,
        "low": float(f"{value - spread:.6g}"),
        "high": float(f"{value + spread:.6g}"),
        "n": n,
    }


def make_results(out_dir: Path, *, seed: int = 0) -> dict[str, Any]:
    """Write the cache PNGs under ``out_dir/cache`` and return a results dict that refers to them.

    The item ``forest/00069`` has no image of ``runs/soundiff-s+cond`` (not generated).
    """
    rng = np.random.default_rng(seed)
    items = []
    for label, stem in ITEMS:
        images: dict[str, list[dict[str, Any]]] = {}
        for system_index, (sid, _, _, _, _, (size, mode), seeds) in enumerate(SYSTEMS):
            if sid == "runs/soundiff-s+cond" and stem == "00069":
                continue
            entries = []
            for s in seeds:
                channels = () if mode == "L" else (3,)
                pixels = rng.integers(0, 256, size=(size[1], size[0], *channels), dtype=np.uint8)
                relative = Path("cache") / f"system{system_index}" / f"{label}-{stem}-s{s}.png"
                (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels, mode).save(out_dir / relative)
                entries.append({"seed": s, "path": str(relative)})
            images[sid] = entries
        items.append(
            {
                "id": f"{label}/{stem}",
                "label": label,
                "audio": str(PSEUDO_ADVANCE / "sound" / label / f"{stem}.wav"),
                "real_image": str(PSEUDO_ADVANCE / "vision" / label / f"{stem}.jpg"),
                "audio_sha256": "0" * 64,
                "images": images,
            }
        )
    n = len(ITEMS)
    metrics: dict[str, dict[str, Any]] = {}
    for index, (sid, *_rest) in enumerate(SYSTEMS):
        metrics[sid] = {
            "fid": _estimate(rng, 1e5 if index == 0 else 100.0, n),  # 1e5: written in e-notation
            "kid": _estimate(rng, -3e-5 if index == 1 else 1e-2, n),  # tiny and negative KIDs occur
            "aic": _estimate(rng, 1.0, n),
            "aic@3": _estimate(rng, 1.0, n),
            "ais": _estimate(rng, 1.0, n),
            "iis": _estimate(rng, 1.0, n),
        }
    del metrics["transformer:runs/it/model"]["fid"]  # a metric that could not be computed is absent
    metrics["baseline"]["aic"] = {"value": 1.0, "low": 0.5, "high": 1.0, "n": n}
    reference = {
        "real": {
            "aic": _estimate(rng, 1.0, n),
            "aic@3": _estimate(rng, 1.0, n),
            f"ais:{PAIRING}": _estimate(rng, 1.0, n),
        },
        "shuffled": {"aic": _estimate(rng, 0.4, n), f"ais:{PAIRING}": _estimate(rng, 0.6, n)},
    }
    per_class = {
        sid: {c: _estimate(rng, 1.0, sum(1 for label, _ in ITEMS if label == c)) for c in CLASSES}
        for sid, *_rest in SYSTEMS
    }
    return {
        "format": "sound2image-evaluation",
        "version": 1,
        "created": "2026-11-30T14:00:00Z",
        "package_version": "0.1.0",
        "command": "sound2image evaluate --data DATA --systems baseline --out report/ & <more>",
        "data": {
            "path": str(PSEUDO_ADVANCE),
            "split": "val",
            "split_file": None,
            "n_items": n,
            "classes": CLASSES,
        },
        "settings": {
            "seeds": [1, 2],
            "max_items": n,
            "features": "clip",
            "k": 3,
            "bootstrap": {"resamples": 1000, "level": 0.95, "seed": 0},
            "generation": {"steps": 2, "guidance_scale": 3.0, "size": 32},
        },
        "systems": [
            {
                "id": sid,
                "label": label,
                "kind": "transformer" if sid.startswith("transformer") else "soundiff",
                "source": sid,
                "condition": condition,
                "fingerprint": f"{index:040x}",
                "model": {"unet": "hf-internal-testing/tiny", "revision": "abc123"},
                "candidates": candidates,
                "best_of_flag": flag,
            }
            for index, (sid, label, condition, flag, candidates, _, _) in enumerate(SYSTEMS)
        ],
        "metrics": metrics,
        "reference": reference,
        "metric_notes": {
            "fid": "CLIP image features, 5 real, 5 generated <small N>",
            "ais": "circular for SounDiff",
            "reference": "real = own audio, shuffled = a derangement",
        },
        "per_class_aic": per_class,
        "items": items,
        "bad_items": [{"item": EVIL_BAD_ITEM, "problem": "not audio (unrecognised format)"}],
    }


def numbers_in(results: dict[str, Any]) -> dict[tuple[str, ...], float | int]:
    """Every number the report must show: ``{(part, ..., field): value}`` over metrics, reference and
    per_class_aic (each is ``part -> name -> name -> Estimate``)."""
    found: dict[tuple[str, ...], float | int] = {}
    for part in ("metrics", "reference", "per_class_aic"):
        for outer, inner in results[part].items():
            for name, estimate in inner.items():
                for field, value in estimate.items():
                    found[(part, outer, name, field)] = value
    return found


def key_path(key: str) -> tuple[str, ...]:
    """A data-key's segments, decoded by the standard library (``%2F`` -> ``/``, ``%25`` -> ``%``)."""
    return tuple(unquote(segment) for segment in key.split("/"))


def documented_format(value: float | int) -> str:
    """The report's documented number format, restated: integers in full, floats as ``format(x, ".4g")``."""
    return str(value) if isinstance(value, int) else format(value, ".4g")


# --- a small HTML tree ------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    """An element: ``tag``, ``attrs`` (dict), ``children`` (Nodes and text strings)."""

    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> list[Node]:
        out: list[Node] = [self]
        for child in self.children:
            if isinstance(child, Node):
                out += child.iter()
        return out

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag)
            and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, (
            f"</{tag}> closes <{self.stack[-1].tag}>: the HTML is not well nested"
        )
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse_html(text: str) -> Node:
    """The document tree (asserts that every element is closed where it should be)."""
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return builder.root
