"""Finding, downloading, checking and caching the ImageBind audio weights.

Resolution order (:func:`resolve_weights`):

1. an explicit path (``from_pretrained(path)``; ``embed --weights PATH``): a ``.pth``/``.pt`` checkpoint or a
   ``.safetensors`` file;
2. the ``SOUND2IMAGE_IMAGEBIND_WEIGHTS`` environment variable (same kinds of file);
3. the cache folder ``<cache>/imagebind/`` where ``<cache>`` is ``$SOUND2IMAGE_CACHE``, else
   ``$XDG_CACHE_HOME/sound2image``, else ``~/.cache/sound2image``: first the audio-only
   ``imagebind_huge_audio.safetensors``, then a full ``imagebind_huge.pth`` placed there by hand;
4. a download of the official ``imagebind_huge.pth`` (4.5 GB) into the cache, with a progress bar and
   HTTP Range resume of a partial ``.part`` file - unless offline (``local_files_only``/``--offline``, or
   ``SOUND2IMAGE_OFFLINE``, ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` true:
   :func:`sound2image.hub.is_offline`), in which case one :class:`WeightsError` line says where to put
   the file.

A ``.pth`` is untrusted input: it is read with ``torch.load(weights_only=True, mmap=True)`` (no code
runs, and only the audio tensors are paged in), its 177 audio tensors are checked by name and shape,
then written to an audio-only safetensors file in the cache (~350 MB for huge instead of 4.5 GB) so that
later loads take a fraction of a second. A downloaded ``imagebind_huge.pth`` is deleted once extracted.

All tensors keep the official names (``modality_trunks.audio.blocks.0.attn.bias_k`` ...); the model maps
them to its own with :func:`sound2image.encoders.imagebind.from_official_key`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from sound2image import hub
from sound2image.atomic import write_atomic
from sound2image.errors import WeightsError

IMAGEBIND_HUGE_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
WEIGHTS_ENV = "SOUND2IMAGE_IMAGEBIND_WEIGHTS"
HUGE_CHECKPOINT_NAME = "imagebind_huge.pth"
HUGE_AUDIO_NAME = "imagebind_huge_audio.safetensors"
AUDIO_PREFIXES = (
    "modality_preprocessors.audio.",
    "modality_trunks.audio.",
    "modality_heads.audio.",
    "modality_postprocessors.audio.",
)


# --- where things are ---------------------------------------------------------------------------


def weights_cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ImageBind weights: ``<cache>/imagebind`` (see the module docstring)."""
    if override is not None:
        return Path(override)
    if os.environ.get("SOUND2IMAGE_CACHE"):
        root = Path(os.environ["SOUND2IMAGE_CACHE"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "sound2image"
    else:
        root = Path.home() / ".cache" / "sound2image"
    return root / "imagebind"


def is_offline(local_files_only: bool = False) -> bool:
    """True when downloads are not allowed: the package's one rule, :func:`sound2image.hub.is_offline`
    (``local_files_only``/``--offline``, ``SOUND2IMAGE_OFFLINE``, ``HF_HUB_OFFLINE``,
    ``TRANSFORMERS_OFFLINE``, ``DIFFUSERS_OFFLINE``)."""
    return hub.is_offline(local_files_only)


def _missing_weights_message(folder: Path, reason: str) -> str:
    return (
        f"ImageBind weights not found ({reason}): put {HUGE_CHECKPOINT_NAME} (or {HUGE_AUDIO_NAME}) in "
        f"{folder}, pass path=PATH, or set {WEIGHTS_ENV}=PATH (download: {IMAGEBIND_HUGE_URL})"
    )


def resolve_weights(
    path: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    progress: bool = True,
    url: str | None = None,
) -> Path:
    """The weights file to use (``.pth``/``.pt`` or ``.safetensors``), downloading it if needed and allowed.

    Raises:
        WeightsError: an explicit or environment path that does not exist, or no weights while offline,
            or a failed download.
    """
    for given, origin in ((path, "weights path"), (os.environ.get(WEIGHTS_ENV) or None, WEIGHTS_ENV)):
        if given is not None:
            given = Path(given).expanduser()
            if given.is_dir():  # a folder laid out like the cache
                found = [
                    given / name
                    for name in (HUGE_AUDIO_NAME, HUGE_CHECKPOINT_NAME)
                    if (given / name).is_file()
                ]
                if not found:
                    raise WeightsError(
                        f"{given}: {origin} is a folder without {HUGE_CHECKPOINT_NAME} or {HUGE_AUDIO_NAME}"
                    )
                return found[0]
            if not given.is_file():
                raise WeightsError(f"{given}: {origin} does not exist")
            return given
    folder = weights_cache_dir(cache_dir)
    for name in (HUGE_AUDIO_NAME, HUGE_CHECKPOINT_NAME):
        if (folder / name).is_file():
            return folder / name
    reason = hub.offline_reason(local_files_only)
    if reason is not None:
        raise WeightsError(
            _missing_weights_message(folder, f"offline ({reason}), no download"),
            parameters=["path", "local_files_only"] if local_files_only else ["path"],
        )
    return download(url or IMAGEBIND_HUGE_URL, folder / HUGE_CHECKPOINT_NAME, progress=progress)


# --- download with resume ------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(handle: Any, path: Path) -> Iterator[None]:
    """Hold an exclusive lock on an open file so two processes never append to the same ``.part``."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a second downloader is unlikely.
        yield
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise WeightsError(
            f"{path}: another process is downloading this file; wait for it to finish"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _total_from_content_range(value: str | None) -> int | None:
    # "bytes 100-199/200" or "bytes */200"
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial file with an HTTP Range request.

    The ``.part`` file is renamed to ``dest`` only when complete (its size equals the server's total), so
    an interrupted download never looks like a finished one; running again resumes it.

    Raises:
        WeightsError: network failure or an incomplete transfer (the partial file is kept for resuming).
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with open(part, "ab") as handle, _exclusive(handle, part):
        offset = handle.tell()
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            # 416: the partial file already holds every byte (a crash between the last write and the rename).
            total = (
                _total_from_content_range(error.headers.get("Content-Range")) if error.code == 416 else None
            )
            if total is not None and total == offset:
                handle.close()
                os.replace(part, dest)
                return dest
            raise WeightsError(f"could not download {url}: HTTP {error.code} {error.reason}") from None
        except (OSError, http.client.HTTPException) as error:  # URLError is an OSError
            reason = getattr(error, "reason", error)
            raise WeightsError(f"could not download {url}: {reason}{_resume_hint(offset, part)}") from None
        with response:
            if offset and response.status != 206:
                # The server ignored the Range header: start again from the first byte.
                handle.seek(0)
                handle.truncate()
                offset = 0
            elif offset and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                raise WeightsError(
                    f"{url}: the server sent a different byte range; delete {part} and run again"
                )
            length = response.headers.get("Content-Length")
            total = _total_from_content_range(response.headers.get("Content-Range"))
            if total is None and length is not None and length.isdigit():
                total = offset + int(length)
            bar = tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=dest.name, disable=not progress,
            )  # fmt: skip
            try:
                while chunk := response.read(chunk_size):
                    handle.write(chunk)
                    bar.update(len(chunk))
            except (
                OSError,
                http.client.HTTPException,
            ) as error:  # connection reset, timeout, incomplete read
                handle.flush()
                raise WeightsError(
                    f"download of {url} interrupted: {error}{_resume_hint(handle.tell(), part)}"
                ) from None
            finally:
                bar.close()
        handle.flush()
        size = handle.tell()
    if total is not None and size != total:
        raise WeightsError(f"download of {url} incomplete: {size} of {total} bytes{_resume_hint(size, part)}")
    os.replace(part, dest)
    return dest


def _resume_hint(size: int, part: Path) -> str:
    return f"; {size} bytes kept in {part}, run again to resume" if size else ""


# --- reading checkpoints -----------------------------------------------------------------------------


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    """True for a safetensors file, by content: an 8-byte little-endian header length, then a JSON object."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A ``.pth`` state dict, loaded safely (``weights_only=True``, memory-mapped when the format allows).

    Accepts a plain state dict or one wrapped as ``{"model": ...}`` / ``{"state_dict": ...}``.

    Raises:
        WeightsError: truncated or unreadable file, Python objects other than tensors, or not a state dict.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # Legacy (non-zip) checkpoints cannot be memory-mapped; load them whole.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad files; all mean the same here
        raise WeightsError(f"{path}: {_describe_load_error(error)}") from None
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping) and not _has_tensors(state):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not _has_tensors(state):
        raise WeightsError(f"{path}: not a state dict (it holds a {type(state).__name__} without tensors)")
    return {str(key): value for key, value in state.items() if isinstance(value, torch.Tensor)}


def _has_tensors(state: Mapping[Any, Any]) -> bool:
    return any(isinstance(value, torch.Tensor) for value in state.values())


def _describe_load_error(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if (
        "weights_only" in str(error)
        or "Unsupported global" in str(error)
        or "UnpicklingError" in type(error).__name__
    ):
        return "refusing to load: the pickle holds Python objects, not only tensors (weights_only=True)"
    if "central directory" in text or "zip" in text.lower() or isinstance(error, EOFError):
        return f"truncated or not a PyTorch checkpoint ({text})"
    return f"cannot read the checkpoint ({type(error).__name__}: {text})"


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file.

    Raises:
        WeightsError: truncated or not a safetensors file.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except Exception as error:  # noqa: BLE001 - SafetensorError, OSError, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(f"{path}: truncated or not a safetensors file ({first})") from None
    return tensors, metadata


def audio_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The audio branch's tensors of an ImageBind state dict (other modalities dropped)."""
    return {key: value for key, value in state.items() if key.startswith(AUDIO_PREFIXES)}


def check_official_state_dict(
    state: Mapping[str, Any], expected: Mapping[str, torch.Tensor | torch.Size], source: str
) -> dict[str, torch.Tensor]:
    """Check that ``state`` has every expected audio tensor with the expected shape; return those tensors.

    Tensors of other modalities are ignored; unexpected audio tensors are an error (a different model).

    Raises:
        WeightsError: one line naming ``source`` and the first problems.
    """
    audio = audio_tensors(state)
    if not audio:
        raise WeightsError(
            f"{source}: no ImageBind audio tensors (modality_*.audio.*); is it an ImageBind checkpoint?"
        )
    missing = [key for key in expected if key not in audio]
    unexpected = [key for key in audio if key not in expected]
    shapes = {key: tuple(getattr(value, "shape", value)) for key, value in expected.items()}
    wrong = [
        f"{key} has shape {tuple(audio[key].shape)}, expected {shapes[key]}"
        for key in expected
        if key in audio and tuple(audio[key].shape) != shapes[key]
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} audio tensors missing (e.g. {', '.join(missing[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} mis-shaped ({'; '.join(wrong[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected audio tensors (e.g. {', '.join(unexpected[:3])})")
    if problems:
        raise WeightsError(f"{source}: does not match the encoder: {'; '.join(problems)}")
    return {key: audio[key] for key in expected}


def expected_shapes(config: Any) -> dict[str, torch.Size]:
    """Official names and shapes of the audio tensors of an encoder with ``config`` (built on ``meta``)."""
    from sound2image.encoders.imagebind import ImageBindAudioEncoder

    with torch.device("meta"):
        model = ImageBindAudioEncoder(config)
    return {key: value.shape for key, value in model.official_state_dict().items()}


# --- the audio-only cache file ------------------------------------------------------------------------


def write_audio_safetensors(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike[str], config: Any, source: str
) -> Path:
    """Write official-named audio tensors plus the config (metadata) to ``path``, atomically."""
    from safetensors.torch import save_file

    from sound2image.encoders.imagebind import config_json

    tensors = {key: value.detach().contiguous() for key, value in state.items()}
    metadata = {"format": "sound2image.imagebind_audio/1", "config": config_json(config), "source": source}
    # A crash never leaves a half-written cache file behind.
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _cache_name_for(checkpoint: Path, folder: Path) -> Path:
    """The audio-only cache file of a checkpoint: the canonical name for the cached official download,
    else one keyed by the checkpoint's resolved path, size and modification time."""
    if checkpoint.parent.resolve() == folder.resolve() and checkpoint.name == HUGE_CHECKPOINT_NAME:
        return folder / HUGE_AUDIO_NAME
    stat = checkpoint.stat()
    key = hashlib.sha256(f"{checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[
        :12
    ]
    return folder / f"{checkpoint.stem}_audio-{key}.safetensors"


def load_audio_state_dict(
    path: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    progress: bool = True,
    url: str | None = None,
) -> tuple[dict[str, torch.Tensor], Any, str]:
    """Official-named audio tensors, the config stored with them (or None) and a description of the source.

    A ``.pth`` is extracted into the audio-only cache file on first use (see the module docstring).

    Raises:
        WeightsError: see :func:`resolve_weights`, :func:`read_checkpoint`, :func:`read_safetensors`.
    """
    from sound2image.encoders.imagebind import ImageBindAudioConfig, infer_config

    folder = weights_cache_dir(cache_dir)
    # Only a checkpoint this call downloads is deleted after extraction, never one the user put there.
    had_checkpoint = (folder / HUGE_CHECKPOINT_NAME).exists()
    file = resolve_weights(
        path, cache_dir=cache_dir, local_files_only=local_files_only, progress=progress, url=url
    )
    if file.suffix == ".safetensors" or is_safetensors(file):
        tensors, metadata = read_safetensors(file)
        config = (
            ImageBindAudioConfig.from_dict(json.loads(metadata["config"]), str(file))
            if "config" in metadata
            else None
        )
        return audio_tensors(tensors), config, str(file)
    cached = _cache_name_for(file, folder)
    if cached.is_file():
        tensors, metadata = read_safetensors(cached)
        config = (
            ImageBindAudioConfig.from_dict(json.loads(metadata["config"]), str(cached))
            if "config" in metadata
            else None
        )
        return audio_tensors(tensors), config, f"{cached} (from {file})"
    audio = audio_tensors(read_checkpoint(file))
    config = infer_config(audio)
    audio = check_official_state_dict(audio, expected_shapes(config), str(file))
    # Copy out of the memory-mapped checkpoint: it may be deleted below, and the model must own its weights.
    audio = {key: value.clone() for key, value in audio.items()}
    try:
        write_audio_safetensors(audio, cached, config, source=str(file))
    except OSError as error:  # a read-only cache must not stop the user: we just load slower next time
        import warnings

        warnings.warn(f"could not cache the audio weights in {cached}: {error}", stacklevel=2)
    else:
        if not had_checkpoint and file == folder / HUGE_CHECKPOINT_NAME:
            file.unlink(missing_ok=True)  # the 4.5 GB download is no longer needed
    return audio, config, str(file)
