"""Stand-ins for the scoring and report parts (contracts B and D) while they are built on other branches.

Only the tests of generation, caching and sharding use them (they test what is drawn and cached, not the
numbers); the end-to-end tests run the real ``scoring.score`` and ``report.write_report``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Every call of the stand-in ``score``: (item ids, generated mapping).
SCORED: list[tuple[list[str], dict[str, dict[str, list[Path]]]]] = []


@dataclass(frozen=True)
class Item:
    """Contract B's ``EvalItem`` fields."""

    id: str
    label: str | None
    audio: Path
    image: Path
    audio_sha256: str


def scoring_available() -> bool:
    """Whether the real scoring and report modules are importable (after the merge)."""
    import importlib.util

    return all(
        importlib.util.find_spec(f"sound2image.evaluation.{name}") is not None
        for name in ("scoring", "report")
    )


def item_type() -> Any:
    """The real ``EvalItem`` once scoring exists, else :class:`Item`."""
    try:
        from sound2image.evaluation.scoring import EvalItem
    except ImportError:
        return Item
    return EvalItem


def fake_score(items: Any, generated: Any, judges: Any, cache_dir: Any = None) -> dict[str, Any]:
    SCORED.append(([item.id for item in items], {k: dict(v) for k, v in generated.items()}))
    return {"metrics": {}, "reference": {}, "metric_notes": {}, "per_class_aic": {}}


def fake_report(results: dict[str, Any], out: Path) -> Path:
    path = Path(out) / "report.html"
    path.write_text("<html>stub</html>")
    return path


def install(setattr_: Any) -> None:
    """Replace scoring, judges and report in :mod:`sound2image.evaluation.run` (``setattr_(obj, name,
    value)``: pytest's ``monkeypatch.setattr`` or plain ``setattr``)."""
    from sound2image.evaluation import run

    setattr_(run, "_score", fake_score)
    setattr_(run, "_write_report", fake_report)
    setattr_(run, "build_judges", lambda config, loaded=None: None)
    setattr_(run, "preflight", lambda config: {})
    setattr_(run, "_item_type", item_type)
