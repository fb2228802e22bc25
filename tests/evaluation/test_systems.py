"""Systems: parsing ``--systems`` × ``--conditions``, the paper's preset, and the fingerprint."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sound2image.errors import UsageError
from sound2image.evaluation import systems as systems_module
from sound2image.evaluation.systems import (
    PAPER_CONDITION,
    SystemSpec,
    directory_digest,
    paper_table1,
    parse_conditions,
    parse_systems,
    system_fingerprint,
)
from tests.paths import PROJECT_ROOT


def test_systems_times_conditions_make_the_columns_and_the_transformer_is_one_column(tmp_path) -> None:
    run = tmp_path / "runs" / "SounDiff L"
    model = tmp_path / "it" / "model"
    run.mkdir(parents=True)
    model.mkdir(parents=True)
    found = parse_systems(
        f"baseline,{run},transformer:{model}", [None, "a satellite image"], model="base/dir", candidates=2
    )
    assert [(s.id, s.label, s.kind, s.source, s.unet, s.condition) for s in found] == [
        ("baseline", "Baseline", "soundiff", "base/dir", None, None),
        ("baseline+cond", "Baseline + condition", "soundiff", "base/dir", None, "a satellite image"),
        ("soundiff-l", "SounDiff L", "soundiff", "base/dir", str(run), None),
        ("soundiff-l+cond", "SounDiff L + condition", "soundiff", "base/dir", str(run), "a satellite image"),
        ("it", "Image Transformer (it)", "transformer", str(model), None, None),
    ]
    assert {s.candidates for s in found} == {2}
    # Two prompts: numbered columns; baseline and its conditioned columns share the weights' key.
    two = parse_systems(["baseline"], [None, "x", "y"])
    assert [s.id for s in two] == ["baseline", "baseline+cond1", "baseline+cond2"]
    assert len({s.model_key for s in two}) == 1


def test_the_paper_preset_is_its_five_columns_with_the_reference_prompt(tmp_path) -> None:
    large, small = tmp_path / "l", tmp_path / "s"
    large.mkdir()
    small.mkdir()
    columns = paper_table1(large, small)
    assert [s.label for s in columns] == [
        "Baseline",
        "Baseline + condition",
        "SounDiff-L",
        "SounDiff-S",
        "SounDiff-S + condition",
    ]
    assert [s.unet for s in columns] == [None, None, str(large), str(small), str(small)]
    # REFERENCE.md §1: the reference code's prompt text.
    assert PAPER_CONDITION == "a satellite image with details on the ground"
    assert [s.condition for s in columns] == [None, PAPER_CONDITION, None, None, PAPER_CONDITION]
    with pytest.raises(UsageError, match=r"^soundiff_s: .*nowhere: no such directory$"):
        paper_table1(large, tmp_path / "nowhere")


def test_conditions_split_on_commas_when_given_as_one_value() -> None:
    assert parse_conditions('none,"a b"'.replace('"', "")) == [None, "a b"]
    assert parse_conditions(["none", "a, b"]) == [None, "a, b"]
    assert parse_conditions(None) == [None]
    assert parse_conditions(["x", "x", "NONE"]) == ["x", None]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "systems: give at least one"),
        (
            "runs/missing",
            "systems: runs/missing: not 'baseline', 'transformer:DIR' nor an existing directory",
        ),
        ("baseline,baseline", "systems: baseline is listed twice"),
        ("transformer:nowhere", "systems: nowhere: no such model directory"),
    ],
)
def test_bad_systems_are_refused_in_one_line_naming_the_option(text, message) -> None:
    with pytest.raises(UsageError) as caught:
        parse_systems(text)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert tuple(caught.value.parameters) == ("systems",)


def _tree(root: Path) -> Path:
    (root / "unet").mkdir(parents=True)
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights" * 100)
    (root / "unet" / "config.json").write_text("{}")
    (root / "sound2image_soundiff.json").write_text("{}")
    return root


def test_the_digest_is_sha256_of_names_sizes_and_contents_and_ignores_run_files(tmp_path) -> None:
    root = _tree(tmp_path / "run")
    entries = [
        {"name": "sound2image_soundiff.json", "sha256": hashlib.sha256(b"{}").hexdigest(), "size": 2},
        {"name": "unet/config.json", "sha256": hashlib.sha256(b"{}").hexdigest(), "size": 2},
        {
            "name": "unet/diffusion_pytorch_model.safetensors",
            "sha256": hashlib.sha256(b"weights" * 100).hexdigest(),
            "size": 700,
        },
    ]
    expected = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    assert directory_digest(root) == expected
    # What training leaves beside the export does not change what loads.
    (root / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (root / "checkpoints" / "checkpoint-1" / "x.bin").write_bytes(b"1")
    (root / ".hidden").write_text("x")
    assert directory_digest(root) == expected
    # One changed byte of the weights does.
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weighta" + b"weights" * 99)
    assert directory_digest(root) != expected


def test_a_large_file_counts_by_sampled_blocks_and_time(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(systems_module, "FULL_HASH_BYTES", 10)
    monkeypatch.setattr(systems_module, "_BLOCK", 4)
    root = tmp_path / "big"
    root.mkdir()
    data = bytearray(b"0123456789abcdefghij")  # 20 bytes: blocks at offsets (20 - 4) * k // 7
    (root / "w.bin").write_bytes(bytes(data))
    before = directory_digest(root)
    data[0] = ord("X")  # inside the first sampled block
    (root / "w.bin").write_bytes(bytes(data))
    assert directory_digest(root) != before


def test_the_fingerprint_is_stable_across_processes_and_tracks_the_unet(tmp_path, base_dir) -> None:
    run = _tree(tmp_path / "run")
    spec = SystemSpec("s", "S", "soundiff", str(base_dir), str(run))
    here = system_fingerprint(spec)
    code = (
        "import sys; from sound2image.evaluation.systems import SystemSpec, system_fingerprint; "
        f"print(system_fingerprint(SystemSpec('s', 'S', 'soundiff', {str(base_dir)!r}, {str(run)!r})))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    ).stdout.strip()
    assert other == here and len(here) == 64
    baseline = system_fingerprint(SystemSpec("b", "B", "soundiff", str(base_dir)))
    assert baseline != here
    # The condition is keyed with the settings, not here: baseline + condition shares the weights' print.
    assert system_fingerprint(SystemSpec("c", "C", "soundiff", str(base_dir), condition="x")) == baseline
    (run / "unet" / "config.json").write_text('{"changed": 1}')
    assert system_fingerprint(spec) != here


def test_a_hub_model_is_fingerprinted_by_its_cached_commit_or_downloaded_first(tmp_path, monkeypatch) -> None:
    from sound2image.evaluation.systems import needs_download

    monkeypatch.delenv("HF_HUB_OFFLINE")  # online: a hub id need not be cached to be named
    spec = SystemSpec("b", "B", "soundiff", "org/model")
    assert needs_download(spec)  # the empty cache (HF_HOME of the fixture) cannot name its commit
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-home" / "hub" / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "model_index.json").write_text("{}")
    assert not needs_download(spec)
    first = system_fingerprint(spec)
    newer = "f" * 40
    (repo / "snapshots" / newer).mkdir()
    (repo / "snapshots" / newer / "model_index.json").write_text("{}")
    (repo / "refs" / "main").write_text(newer)  # main moved: another commit, another fingerprint
    assert system_fingerprint(spec) != first
    assert not needs_download(SystemSpec("t", "T", "transformer", str(tmp_path)))
