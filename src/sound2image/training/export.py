"""The final export of a SounDiff fine-tuning run: what generation loads.

An export directory holds

* ``unet/`` — the fine-tuned U-Net in diffusers format (``UNet2DConditionModel.save_pretrained``), with
  LoRA adapters merged into the base weights and EMA weights copied in when they were used, so loading
  needs neither peft nor the EMA;
* ``sound2image_soundiff.json`` — the training record: base model, variant, training prompt, the whole
  training config and the calibration;
* ``sound2image_calibration.json`` — the embedding scale used in training (generation must use the same).

``SounDiffPipeline.from_pretrained(BASE, unet=EXPORT_DIR)`` and ``sound2image generate --unet EXPORT_DIR``
read it.

An IP-Adapter run (``backbone="sd15-ip"``/``"sdxl-ip"``) exports the adapter instead of a U-Net
(:func:`export_ip_adapter`): ``ip-adapter.safetensors`` (diffusers' flat ``image_proj.*``/``ip_adapter.*``
keys, loadable by plain diffusers' ``load_ip_adapter`` into any pipeline of the same architecture), with the
calibration and training record beside it, where ``SounDiffPipeline.from_pretrained(MODEL,
backbone=..., ip_adapter=EXPORT_DIR / "ip-adapter.safetensors")`` finds the calibration.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from sound2image import __version__
from sound2image.diffusion.calibration import EmbeddingCalibration

TRAINING_RECORD = "sound2image_soundiff.json"
#: The exported adapter of an IP-Adapter run.
IP_ADAPTER_FILE = "ip-adapter.safetensors"
UNET_FOLDER = "unet"
EXPORT_FORMAT = 1


def has_lora(unet: torch.nn.Module) -> bool:
    """True when peft adapters are attached to ``unet``."""
    return bool(getattr(unet, "peft_config", None))


def merge_lora(unet: torch.nn.Module) -> torch.nn.Module:
    """Fold LoRA adapters into the base weights and remove them (a plain U-Net again), in place."""
    if has_lora(unet):
        unet.fuse_lora(lora_scale=1.0)  # W <- W + scale * B @ A in every adapted layer
        unet.unload_lora()  # replace the peft wrappers by their (now merged) base layers
    return unet


def export_soundiff(
    unet: torch.nn.Module,
    directory: str | os.PathLike[str],
    *,
    calibration: EmbeddingCalibration,
    record: dict[str, Any],
) -> Path:
    """Write the export into ``directory`` (created if needed); returns it.

    Args:
        unet: the trained U-Net, unwrapped (no DDP), EMA weights already copied in if wanted. A LoRA
            U-Net is merged in place.
        directory: the export directory (the run's output directory).
        calibration: the embedding scale used in training.
        record: the training record (base model, variant, prompt, config, steps ...).
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    unet = merge_lora(unet)
    # Write the U-Net beside its final place, then swap it in: a crash never leaves a half U-Net folder.
    tmp = root / f".tmp-{UNET_FOLDER}"
    shutil.rmtree(tmp, ignore_errors=True)
    unet.save_pretrained(tmp, safe_serialization=True)
    final = root / UNET_FOLDER
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    calibration.save(root)
    full = {"format": EXPORT_FORMAT, "package_version": __version__, **record}
    (root / TRAINING_RECORD).write_text(json.dumps(full, indent=2, default=str) + "\n")
    return root


def export_ip_adapter(
    unet: torch.nn.Module,
    directory: str | os.PathLike[str],
    *,
    calibration: EmbeddingCalibration,
    record: dict[str, Any],
) -> Path:
    """Write an IP-Adapter run's export into ``directory`` (created if needed); returns it.

    ``ip-adapter.safetensors`` (:func:`~sound2image.diffusion.backbones.save_ip_adapter`, written beside
    its final name and swapped in), ``sound2image_calibration.json`` and ``sound2image_soundiff.json``.

    Args:
        unet: the U-Net with the trained adapter, unwrapped (no DDP), EMA weights already copied in.
        directory: the export directory (the run's output directory).
        calibration: the embedding scale used in training.
        record: the training record (base model, backbone, adapter, prompt, config, steps ...).

    Raises:
        WeightsError: the U-Net holds no IP-Adapter.
    """
    from sound2image.diffusion.backbones import save_ip_adapter

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tmp = save_ip_adapter(unet, root / f".tmp-{IP_ADAPTER_FILE}")
    os.replace(tmp, root / IP_ADAPTER_FILE)
    calibration.save(root)
    full = {"format": EXPORT_FORMAT, "package_version": __version__, **record}
    (root / TRAINING_RECORD).write_text(json.dumps(full, indent=2, default=str) + "\n")
    return root
