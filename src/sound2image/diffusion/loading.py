"""Finding SounDiff's weights: the Hugging Face cache, a local directory, or an environment variable.

Everything here reads the environment at call time (not import time), so ``HF_HOME``,
``HF_HUB_CACHE`` and the offline variables (:func:`sound2image.hub.is_offline`) set by a caller or a
test take effect. Every failure is a
one-line :class:`~sound2image.errors.WeightsError` naming what is missing and the three ways to
supply it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sound2image import hub
from sound2image.errors import UsageError, WeightsError

#: The zero-shot baseline's image generator (SD 2.1 unCLIP conditioned on OpenCLIP ViT-H embeddings).
DEFAULT_UNCLIP = "stabilityai/stable-diffusion-2-1-unclip"
#: Name recorded for the default audio encoder (the ImageBind-huge audio branch).
DEFAULT_AUDIO_ENCODER = "imagebind_huge"
#: Environment variable naming a local copy (or another hub id) of the unCLIP pipeline.
UNCLIP_ENV = "SOUND2IMAGE_UNCLIP"

#: Files that mark the kinds of directory we accept.
PIPELINE_CONFIG = "sound2image_pipeline.json"  # a SounDiffPipeline.save_pretrained directory
TRAINING_CONFIG = "sound2image_soundiff.json"  # a fine-tuning export (unet/ + calibration)
MODEL_INDEX = "model_index.json"  # any diffusers pipeline directory

_HOW_TO_SUPPLY = (
    "download it once with network access (it is cached under HF_HOME), pass model=DIR with a local "
    f"diffusers copy, or set {UNCLIP_ENV}=DIR"
)
#: The parameters ``_HOW_TO_SUPPLY`` names.
_SUPPLY_PARAMETERS = ("model",)


@dataclass(frozen=True)
class ModelSource:
    """Where one set of weights comes from: a local directory or a hub id (with its revision)."""

    name: str
    path: Path | None = None
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def location(self) -> str:
        """What to hand to a diffusers ``from_pretrained``."""
        return str(self.path) if self.path is not None else self.name


def is_offline(local_files_only: bool = False) -> bool:
    """True when no weights may be downloaded: the package's one rule, :func:`sound2image.hub.is_offline`
    (``local_files_only``/``--offline``, ``SOUND2IMAGE_OFFLINE``, ``HF_HUB_OFFLINE``,
    ``TRANSFORMERS_OFFLINE``, ``DIFFUSERS_OFFLINE``), the same one the ImageBind weights follow."""
    return hub.is_offline(local_files_only)


def hub_cache_dir() -> Path:
    """The hub cache the user's environment points at (``HF_HUB_CACHE``, else ``HF_HOME/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def looks_like_path(name: str) -> bool:
    """A name meant as a directory rather than a hub id (``org/name``)."""
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or "\\" in name:
        return True
    return name.count("/") != 1  # hub ids are exactly org/name


def resolve_pipeline_source(
    model: str | None = None,
    revision: str | None = None,
    default: str | None = None,
    what: str = "unCLIP pipeline",
) -> ModelSource:
    """The pipeline to load: ``model``, else (unCLIP) ``$SOUND2IMAGE_UNCLIP``, else the default hub id
    (``default``: another backbone's model; its ``what`` names it in messages).

    A local directory must hold a diffusers ``model_index.json``; a hub id must be in the cache when
    offline. Raises ``WeightsError`` naming what is missing and how to supply it.
    """
    name = model or (default if default is not None else os.environ.get(UNCLIP_ENV) or DEFAULT_UNCLIP)
    how = _HOW_TO_SUPPLY if default is None else how_to_supply(what)
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise WeightsError(f"{path}: pipeline directory not found; {how}", parameters=_SUPPLY_PARAMETERS)
        if not (path / MODEL_INDEX).is_file():
            raise WeightsError(
                f"{path}: not a diffusers pipeline directory (no {MODEL_INDEX}); {how}",
                parameters=_SUPPLY_PARAMETERS,
            )
        return ModelSource(name=str(path.resolve()), path=path.resolve())
    check_hub_file(name, revision, MODEL_INDEX, what, how, _SUPPLY_PARAMETERS)
    return ModelSource(name=name, revision=revision)


def how_to_supply(what: str) -> str:
    """How to supply a backbone's pipeline other than unCLIP (no environment variable for those)."""
    return (
        "download it once with network access (it is cached under HF_HOME) or pass model=DIR with a local "
        f"diffusers copy of the {what}"
    )


def resolve_unet_source(unet: str, revision: str | None = None) -> tuple[ModelSource, str | None]:
    """A fine-tuned U-Net: ``(source, subfolder)`` for ``UNet2DConditionModel.from_pretrained``.

    Accepts a training export (``unet/`` beside ``sound2image_soundiff.json``), a whole pipeline
    directory (``unet/`` beside ``model_index.json``), a bare U-Net directory (``config.json``), or a
    hub id (a U-Net repository or a pipeline repository with a ``unet`` folder).
    """
    if looks_like_path(unet):
        path = Path(unet).expanduser().resolve()
        if not path.is_dir():
            raise WeightsError(f"{path}: fine-tuned U-Net directory not found")
        if (path / "unet" / "config.json").is_file():
            return ModelSource(name=str(path), path=path), "unet"
        if (path / "config.json").is_file():
            return ModelSource(name=str(path), path=path), None
        raise WeightsError(
            f"{path}: no U-Net here (expected unet/config.json from a training export or a pipeline, "
            "or config.json of a bare U-Net)"
        )
    # A hub id: prefer a pipeline layout (unet/ folder), fall back to a bare U-Net repository.
    try:
        _check_hub_id(unet, revision, "unet/config.json", what="fine-tuned U-Net")
        return ModelSource(name=unet, revision=revision), "unet"
    except WeightsError:
        _check_hub_id(unet, revision, "config.json", what="fine-tuned U-Net")
        return ModelSource(name=unet, revision=revision), None


def _check_hub_id(repo_id: str, revision: str | None, filename: str, what: str) -> None:
    """Fail early and clearly when offline and ``repo_id`` is not in the local cache."""
    check_hub_file(repo_id, revision, filename, what, _HOW_TO_SUPPLY, _SUPPLY_PARAMETERS)


def check_hub_file(
    repo_id: str,
    revision: str | None,
    filename: str,
    what: str,
    how: str,
    parameters: tuple[str, ...] | list[str],
) -> None:
    """Fail early when offline and ``filename`` of ``repo_id`` is not in the local cache: a one-line
    WeightsError naming ``what``, the cache, why downloads are off and ``how`` to supply it (its
    ``parameters`` are the ones ``how`` names)."""
    if repo_id.count("/") != 1 or any(part == "" for part in repo_id.split("/")):
        raise UsageError(f"{repo_id}: not a local directory nor a hub id of the form org/name")
    reason = hub.offline_reason()
    if reason is None:
        return  # diffusers will download it; a failure there is turned into a WeightsError by the caller
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir(), revision=revision)
    if not isinstance(cached, str):
        raise WeightsError(
            f"{repo_id}: {what} weights are not in the Hugging Face cache ({hub_cache_dir()}) and "
            f"downloads are off ({reason}); {how}",
            parameters=parameters,
        )


# What diffusers / huggingface_hub say when a model is not cached and the Hub cannot be reached.
_UNREACHABLE = ("not fully cached locally", "trying to fetch metadata from the hub", "connection")


def _hub_unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it was raised from) says the Hub could not be reached."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name, text = type(current).__name__, str(current).lower()
        if name in ("LocalEntryNotFoundError", "ConnectionError", "OfflineModeIsEnabled") or any(
            phrase in text for phrase in _UNREACHABLE
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def weights_error(
    source: ModelSource, what: str, error: BaseException, how: str | None = None
) -> WeightsError:
    """Turn a loader's exception into our one-line error (no network: say so, not the library's text);
    ``how`` says how to supply the weights (default: the unCLIP pipeline's ways)."""
    how = how or _HOW_TO_SUPPLY
    if source.path is None and _hub_unreachable(error):
        return WeightsError(
            f"{source.name}: {what} weights are not in the Hugging Face cache ({hub_cache_dir()}) and "
            f"the Hub cannot be reached; {how}",
            parameters=_SUPPLY_PARAMETERS,
        )
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return WeightsError(
        f"{source.name}: could not load the {what} ({detail}); {how}", parameters=_SUPPLY_PARAMETERS
    )


def hub_kwargs() -> dict[str, object]:
    """Keyword arguments that make every hub loader honour the current environment.

    ``local_files_only`` is True whenever :func:`is_offline` is, whichever variable says so: diffusers and
    huggingface_hub read only ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` (at import time), so
    ``SOUND2IMAGE_OFFLINE`` reaches them only through this keyword.
    """
    return {"cache_dir": str(hub_cache_dir()), "local_files_only": is_offline()}
