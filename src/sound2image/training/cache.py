"""The cache pass: audio embeddings and VAE latents computed once, reused across epochs and runs.

The public reference code re-encoded every image with the VAE at every step (REFERENCE.md §2). Here the
frozen parts run once over the dataset:

* **VAE latents** — the posterior's mean and std of every image (resized and centre-cropped to the
  training resolution), and of its horizontal mirror image, so that flip augmentation stays possible:
  the VAE is not exactly flip-equivariant, so mirroring a latent is not the latent of the mirror image.
  A fresh latent is sampled from (mean, std) at every step, as training on images would.
* **Audio embeddings** — the audio encoder's output (ImageBind post-processing: unit vector × 20). The
  embedding calibration (:class:`~sound2image.diffusion.calibration.EmbeddingCalibration`) is a pure
  rescaling applied when a batch is formed, so one cache serves every calibration.

Layout: ``<cache>/<kind>-<settings hash>/shard-*.safetensors``. A tensor is named
``<sha256 of the file's content>/<field>``, so renamed or moved files hit the cache and edited files miss
it, and everything that affects the numbers (weights, resolution, dtype, preprocessing) is in the
settings hash, so a different model never reads stale entries. Shards are written atomically every
``shard_size`` items: an interrupted pass keeps what it finished and the next pass computes the rest.
Launched on several processes, each rank computes the missing items of its share (round-robin over
all sorted keys) and all wait for each other before reading the whole cache.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sound2image.atomic import write_atomic, write_text_atomic
from sound2image.data import BadItems, Pair, load_image
from sound2image.errors import DataError, Sound2ImageError
from sound2image.outputs import file_sha256

HASH_INDEX = "file-hashes.json"
SETTINGS_FILE = "settings.json"
LATENT_FIELDS = ("mean", "std", "flip_mean", "flip_std")
EmbedFn = Callable[[Sequence[Path]], torch.Tensor]


@dataclass(frozen=True)
class LatentSettings:
    """Everything that changes a cached latent."""

    resolution: int
    vae: str  # fingerprint of the VAE's config and weights
    dtype: str = "float32"  # storage dtype of mean/std
    flip: bool = True
    preprocessing: str = "rgb, resize shorter side (bicubic), centre crop, [-1, 1]"

    def key(self) -> str:
        return _digest(json.dumps(asdict(self), sort_keys=True))[:16]


@dataclass(frozen=True)
class AudioSettings:
    """Everything that changes a cached audio embedding."""

    encoder: str  # fingerprint of the encoder's config (incl. preprocessing) and weights

    def key(self) -> str:
        return _digest(json.dumps(asdict(self), sort_keys=True))[:16]


@dataclass
class CachedPairs:
    """The usable pairs and their cached tensors, row i belonging to ``pairs[i]``."""

    pairs: list[Pair]
    latent_mean: torch.Tensor  # (N, C, h, w)
    latent_std: torch.Tensor  # (N, C, h, w)
    flip_mean: torch.Tensor | None  # (N, C, h, w) or None without flip variants
    flip_std: torch.Tensor | None
    audio_embeds: torch.Tensor  # (N, D), the encoder's own scale
    bad: BadItems = field(default_factory=BadItems)

    def __len__(self) -> int:
        return len(self.pairs)


# --- fingerprints and file hashes --------------------------------------------------------------------


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def module_fingerprint(module: torch.nn.Module, extra: Any = None) -> str:
    """sha256 of a module's config (if any), ``extra`` and every parameter/buffer's name, shape and bytes."""
    digest = hashlib.sha256()
    config = getattr(module, "config", None)
    if isinstance(config, dict):
        # diffusers' private keys (e.g. ``_use_default_values``, built from a set) vary between processes.
        config = {key: value for key, value in config.items() if not key.startswith("_")}
    digest.update(json.dumps(config, sort_keys=True, default=repr).encode())
    digest.update(repr(extra).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        # (n,) uint8 view of the raw bytes, whatever the dtype (numpy has no bfloat16).
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def content_hashes(paths: Sequence[Path], cache_root: Path, write: bool = True) -> dict[Path, str]:
    """sha256 of each readable file's content, reusing ``file-hashes.json`` when size and mtime match.

    Unreadable files are left out (the caller reports them).
    """
    index_path = cache_root / HASH_INDEX
    try:
        index: dict[str, list[Any]] = json.loads(index_path.read_text()) if index_path.is_file() else {}
    except ValueError:
        index = {}  # a damaged index only costs re-hashing
    result: dict[Path, str] = {}
    changed = False
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        entry = index.get(str(path.resolve()))
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            result[path] = entry[2]
            continue
        try:
            sha = file_sha256(path)
        except OSError:
            continue
        index[str(path.resolve())] = [stat.st_size, stat.st_mtime_ns, sha]
        result[path] = sha
        changed = True
    if changed and write:
        write_text_atomic(index_path, json.dumps(index))
    return result


# --- the shard store ----------------------------------------------------------------------------------


class ShardStore:
    """A folder of safetensors shards whose tensors are named ``<key>/<field>``."""

    def __init__(self, directory: Path, settings: Any) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        settings_path = directory / SETTINGS_FILE
        if not settings_path.is_file():
            write_text_atomic(settings_path, json.dumps(asdict(settings), indent=2) + "\n")

    def shards(self) -> list[Path]:
        return sorted(self.directory.glob("shard-*.safetensors"))

    def keys(self) -> set[str]:
        """Keys with at least one tensor stored (shards are complete: written atomically)."""
        from safetensors import safe_open

        found: set[str] = set()
        for shard in self.shards():
            with safe_open(str(shard), framework="pt") as handle:
                found.update(name.split("/", 1)[0] for name in handle.keys())  # noqa: SIM118 - not a dict
        return found

    def write(self, tensors: dict[str, torch.Tensor], rank: int) -> Path:
        """Write one shard atomically (temporary name, then rename)."""
        from safetensors.torch import save_file

        path = self.directory / f"shard-r{rank}-{uuid.uuid4().hex[:12]}.safetensors"
        tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
        return write_atomic(path, lambda tmp: save_file(tensors, tmp))

    def load(self, keys: set[str]) -> dict[str, torch.Tensor]:
        """Every stored tensor whose key is in ``keys``."""
        from safetensors import safe_open

        loaded: dict[str, torch.Tensor] = {}
        for shard in self.shards():
            with safe_open(str(shard), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - not a dict
                    if name.split("/", 1)[0] in keys:
                        loaded[name] = handle.get_tensor(name)
        return loaded


# --- computing entries -----------------------------------------------------------------------------


def image_to_tensor(path: Path, resolution: int) -> torch.Tensor:
    """(3, R, R) in [-1, 1]: RGB, shorter side resized to R (bicubic), centre crop. Raises ImageError."""
    from PIL import Image

    image = load_image(path, "RGB")
    scale = resolution / min(image.size)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # (R, R, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, R, R)


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, pixels: torch.Tensor, flip: bool) -> dict[str, torch.Tensor]:
    """VAE posterior mean/std of (B, 3, R, R) pixels, and of their mirror images when ``flip``."""
    device, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    out: dict[str, torch.Tensor] = {}
    variants = [("", pixels)] + ([("flip_", torch.flip(pixels, dims=[-1]))] if flip else [])
    for prefix, batch in variants:
        dist = vae.encode(batch.to(device=device, dtype=dtype)).latent_dist
        out[f"{prefix}mean"] = dist.mean.float().cpu()
        out[f"{prefix}std"] = dist.std.float().cpu()
    return out


def _embed_robust(embed: EmbedFn, paths: list[Path], bad: BadItems) -> dict[Path, torch.Tensor]:
    """Embed a batch; if a file in it is bad, retry one by one to find it, record it and keep the rest."""
    try:
        vectors = embed(paths)
        return {path: vectors[i] for i, path in enumerate(paths)}
    except Sound2ImageError:
        if len(paths) == 1:
            raise
    result: dict[Path, torch.Tensor] = {}
    for path in paths:
        try:
            result[path] = embed([path])[0]
        except Sound2ImageError as error:
            bad.record(path, error)
    return result


@dataclass
class CachePass:
    """One cache pass over a set of pairs.

    Attributes:
        cache_root: where the stores live (``<output>/cache`` by default; share it between runs).
        vae: the frozen VAE, on its device and dtype.
        embed: maps audio paths to (N, D) embeddings; raises an AudioError subclass for a bad file.
        latent_settings, audio_settings: what the entries depend on (see the classes).
        batch_size: items per VAE/encoder batch.
        shard_size: items per shard (a shard is the unit an interrupted pass keeps).
        rank, world_size: this process's share when launched on several.
        barrier: called after this rank's share (``accelerator.wait_for_everyone``).
        gather: merges per-rank lists of bad-item lines (``accelerate.utils.gather_object``).
        progress: show a tqdm bar.
    """

    cache_root: Path
    vae: torch.nn.Module
    embed: EmbedFn
    latent_settings: LatentSettings
    audio_settings: AudioSettings
    batch_size: int = 8
    shard_size: int = 64
    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = lambda: None
    gather: Callable[[list[Any]], list[Any]] = lambda items: items
    progress: bool = False

    @property
    def latent_store(self) -> ShardStore:
        return ShardStore(self.cache_root / f"latents-{self.latent_settings.key()}", self.latent_settings)

    @property
    def audio_store(self) -> ShardStore:
        return ShardStore(self.cache_root / f"audio-{self.audio_settings.key()}", self.audio_settings)

    def run(self, pairs: Sequence[Pair]) -> CachedPairs:
        """Fill the cache for ``pairs`` (this rank's share), wait for all ranks, load everything."""
        usable, hashes, bad = self.fill(pairs)
        self.barrier()
        # Every rank reports every rank's bad items (order by rank, then as met).
        all_bad = BadItems()
        for path, message in self.gather(list(bad.entries)):
            all_bad.record(path, message)
        return self._load(usable, hashes, all_bad)

    def fill(self, pairs: Sequence[Pair]) -> tuple[list[Pair], dict[Path, str], BadItems]:
        """Compute this rank's share of the missing entries (no waiting for other ranks).

        Returns the pairs whose files are readable, every file's content hash and the bad items met.
        """
        bad = BadItems()
        paths = sorted({p.audio for p in pairs} | {p.image for p in pairs})
        hashes = content_hashes(paths, self.cache_root, write=self.rank == 0)
        for path in paths:
            if path not in hashes:
                bad.record(path, DataError(f"{path}: missing or unreadable"))
        usable = [p for p in pairs if p.audio in hashes and p.image in hashes]
        images = {hashes[p.image]: p.image for p in usable}
        audios = {hashes[p.audio]: p.audio for p in usable}
        self._fill(self.latent_store, images, bad, self._latent_entries, "latents")
        self._fill(self.audio_store, audios, bad, self._audio_entries, "audio embeddings")
        return usable, hashes, bad

    def embed_paths(self, paths: Sequence[Path]) -> torch.Tensor:
        """(N, D) cached embeddings of audio files (validation audios); computes missing ones here."""
        hashes = content_hashes(list(paths), self.cache_root, write=self.rank == 0)
        missing = [p for p in paths if p not in hashes]
        if missing:
            raise DataError(f"{missing[0]}: missing or unreadable audio file")
        store = self.audio_store
        have = store.keys()
        todo = {hashes[p]: p for p in paths if hashes[p] not in have}
        if todo:
            vectors = self.embed(list(todo.values()))  # a bad validation audio is the user's to fix: raise
            store.write({f"{key}/embed": vectors[i] for i, key in enumerate(todo)}, self.rank)
        loaded = store.load({hashes[p] for p in paths})
        return torch.stack([loaded[f"{hashes[p]}/embed"] for p in paths]).float()

    # --- internals ------------------------------------------------------------------------------

    def _fill(
        self,
        store: ShardStore,
        items: dict[str, Path],
        bad: BadItems,
        compute: Callable[[list[tuple[str, Path]], BadItems], dict[str, torch.Tensor]],
        what: str,
    ) -> None:
        have = store.keys()
        # A key's rank follows from its position among *all* keys, not among the missing ones: the shares
        # then do not depend on when each rank lists the store (another rank may already have written).
        mine = [
            (key, items[key])
            for position, key in enumerate(sorted(items))
            if position % self.world_size == self.rank and key not in have
        ]
        if not mine:
            return
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc=f"caching {what}", disable=not self.progress, unit="file")
        pending: dict[str, torch.Tensor] = {}
        pending_items = 0
        for start in range(0, len(mine), self.batch_size):
            chunk = mine[start : start + self.batch_size]
            entries = compute(chunk, bad)
            pending.update(entries)
            pending_items += len(chunk)
            bar.update(len(chunk))
            if pending_items >= self.shard_size:
                store.write(pending, self.rank)
                pending, pending_items = {}, 0
        if pending:
            store.write(pending, self.rank)
        bar.close()

    def _latent_entries(self, chunk: list[tuple[str, Path]], bad: BadItems) -> dict[str, torch.Tensor]:
        pixels, keys = [], []
        for key, path in chunk:
            try:
                pixels.append(image_to_tensor(path, self.latent_settings.resolution))
                keys.append(key)
            except Sound2ImageError as error:
                bad.record(path, error)
        if not keys:
            return {}
        dtype = getattr(torch, self.latent_settings.dtype)
        encoded = encode_latents(
            self.vae, torch.stack(pixels), self.latent_settings.flip
        )  # each (B, C, h, w)
        return {
            f"{key}/{name}": value[i].to(dtype)
            for name, value in encoded.items()
            for i, key in enumerate(keys)
        }

    def _audio_entries(self, chunk: list[tuple[str, Path]], bad: BadItems) -> dict[str, torch.Tensor]:
        by_path = _embed_robust(self.embed, [path for _, path in chunk], bad)
        return {f"{key}/embed": by_path[path].float() for key, path in chunk if path in by_path}

    def _load(self, pairs: list[Pair], hashes: dict[Path, str], bad: BadItems) -> CachedPairs:
        latents = self.latent_store.load({hashes[p.image] for p in pairs})
        audio = self.audio_store.load({hashes[p.audio] for p in pairs})
        kept = []
        for pair in pairs:
            if f"{hashes[pair.image]}/mean" in latents and f"{hashes[pair.audio]}/embed" in audio:
                kept.append(pair)
            elif not any(path in (str(pair.audio), str(pair.image)) for path, _ in bad.entries):
                bad.record(
                    f"{pair.audio} + {pair.image}",
                    "not in the cache after the pass (failed on another process?)",
                )
        if not kept:
            raise DataError(f"no usable pairs: all {len(pairs)} failed to load ({bad.summary()})")

        def stack(name: str) -> torch.Tensor:
            return torch.stack([latents[f"{hashes[p.image]}/{name}"] for p in kept]).float()

        flip = self.latent_settings.flip
        return CachedPairs(
            pairs=kept,
            latent_mean=stack("mean"),  # (N, C, h, w)
            latent_std=stack("std"),
            flip_mean=stack("flip_mean") if flip else None,
            flip_std=stack("flip_std") if flip else None,
            audio_embeds=torch.stack([audio[f"{hashes[p.audio]}/embed"] for p in kept]).float(),  # (N, D)
            bad=bad,
        )
