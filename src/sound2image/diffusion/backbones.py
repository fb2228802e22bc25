"""The image generators SounDiff can drive with one audio vector: a component of the pipeline, not a copy.

ImageBind's audio tower was trained against the frozen OpenCLIP ViT-H/14 image encoder, so its vectors
live in that encoder's image-embedding space. Three diffusers pipelines read that exact space:

- ``unclip``: SD 2.1 unCLIP (``StableUnCLIPImg2ImgPipeline``, argument ``image_embeds``), the default;
- ``sd15-ip``: any SD 1.5 pipeline with ``h94/IP-Adapter``'s ``models/ip-adapter_sd15.bin``;
- ``sdxl-ip``: any SDXL pipeline with ``h94/IP-Adapter``'s ``sdxl_models/ip-adapter_sdxl_vit-h.bin``.

The IP-Adapter model card says both take the global image embedding of OpenCLIP ViT-H-14 (1,024-d);
the vector goes in through diffusers' ``ip_adapter_image_embeds``. The bigG adapters
(``ip-adapter_sdxl.bin``, 1,280-d) and the "plus"/face adapters (patch tokens) read another space and
are refused. Each :class:`Backbone` knows its diffusers pipeline, how a (N, 1024) conditioning becomes
that pipeline's keyword arguments, its native size and default guidance, the image encoder that
calibration and best-of-N use, and what to record so that an image can be drawn again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from sound2image.diffusion.loading import (
    ModelSource,
    check_hub_file,
    how_to_supply,
    hub_kwargs,
    looks_like_path,
)
from sound2image.errors import UsageError, WeightsError
from sound2image.validation import check_number

#: The IP-Adapter weights of the ViT-H image space (the h94/IP-Adapter repository).
DEFAULT_IP_ADAPTER = "h94/IP-Adapter"
#: Where the ViT-H image encoder of both ViT-H adapters sits in that repository.
VIT_H_IMAGE_ENCODER = "models/image_encoder"
#: The embedding width of OpenCLIP ViT-H/14 (and of ImageBind-huge): the only space the audio vector is in.
VIT_H_DIM = 1024
WEIGHT_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth")


@dataclass(frozen=True)
class IPAdapterSource:
    """One IP-Adapter weight file: what ``load_ip_adapter`` takes, and its name for the record.

    Attributes:
        name: the repository id or the resolved local directory (recorded).
        subfolder: the folder of the weight file inside ``name`` ("" for none).
        weight_name: the weight file's name.
        image_encoder_folder: the image encoder's folder (``load_ip_adapter``'s argument), or None when
            there is none to load (best-of-N, ``--image`` and calibration then need another pipeline).
        revision: hub revision (None for a local directory).
        path: the local directory, or None for a hub id.
    """

    name: str
    subfolder: str
    weight_name: str
    image_encoder_folder: str | None
    revision: str | None = None
    path: Path | None = None

    @property
    def location(self) -> str:
        return str(self.path) if self.path is not None else self.name

    @property
    def file(self) -> str:
        """The weight file inside ``name`` (``subfolder/weight_name``)."""
        return f"{self.subfolder}/{self.weight_name}" if self.subfolder else self.weight_name


def resolve_ip_adapter(
    ip_adapter: str | os.PathLike[str] | None,
    default_file: str,
    revision: str | None = None,
) -> IPAdapterSource:
    """Where the adapter's weights are: a weight file, a local copy of ``h94/IP-Adapter`` (a folder
    holding ``default_file``), a hub id (``org/name``, with ``default_file``) or a hub file
    (``org/name/sub/file.bin``). None means ``h94/IP-Adapter`` with ``default_file``.

    A weight file's image encoder is the ``image_encoder/`` folder beside it (when present); a
    repository's is ``models/image_encoder`` (OpenCLIP ViT-H/14).

    Raises:
        WeightsError: a path that does not exist, a folder without ``default_file``, or (offline) a hub
            file that is not in the cache; the message names ``ip_adapter``.
    """
    name = str(ip_adapter) if ip_adapter is not None else DEFAULT_IP_ADAPTER
    subfolder, _, weight_name = default_file.rpartition("/")
    is_hub_file = not Path(name).expanduser().exists() and name.count("/") >= 3
    if is_hub_file and name.lower().endswith(WEIGHT_SUFFIXES) and not name.startswith((".", "/", "~")):
        repo = "/".join(name.split("/")[:2])
        subfolder, _, weight_name = name.split("/", 2)[2].rpartition("/")
        name = repo
    elif looks_like_path(name):
        path = Path(name).expanduser().resolve()
        if path.is_file():
            # h94's layout puts ViT-bigG beside the SDXL weights (sdxl_models/image_encoder) and ViT-H in
            # models/image_encoder: take the first ViT-H encoder of the two places.
            for root, folder in ((path.parent, "image_encoder"), (path.parent.parent, VIT_H_IMAGE_ENCODER)):
                if _is_vit_h_encoder(root / folder):
                    subfolder = "" if root == path.parent else path.parent.name
                    return IPAdapterSource(str(root), subfolder, path.name, folder, None, root)
            return IPAdapterSource(str(path.parent), "", path.name, None, None, path.parent)
        if not path.is_dir():
            raise WeightsError(
                f"{path}: IP-Adapter weights not found; pass ip_adapter=FILE (e.g. {weight_name}) or a "
                f"local copy of {DEFAULT_IP_ADAPTER}",
                parameters=["ip_adapter"],
            )
        if not (path / default_file).is_file():
            raise WeightsError(
                f"{path}: no {default_file} in this folder; pass ip_adapter=FILE for another weight file",
                parameters=["ip_adapter"],
            )
        encoder = VIT_H_IMAGE_ENCODER if _is_vit_h_encoder(path / VIT_H_IMAGE_ENCODER) else None
        return IPAdapterSource(str(path), subfolder, weight_name, encoder, None, path)
    source = IPAdapterSource(name, subfolder, weight_name, VIT_H_IMAGE_ENCODER, revision)
    how = (
        f"download it once with network access (cached under HF_HOME) or pass ip_adapter=FILE "
        f"(a local {weight_name}, with its image_encoder/ folder beside it)"
    )
    check_hub_file(name, revision, source.file, f"IP-Adapter ({source.file})", how, ["ip_adapter"])
    return source


def _is_vit_h_encoder(folder: Path) -> bool:
    """Whether ``folder`` holds a saved CLIP image encoder with ViT-H's 1,024-d projection."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return config.get("projection_dim") == VIT_H_DIM


class Backbone:
    """One image generator that a (N, 1024) ViT-H conditioning drives (the base of every backbone).

    Attributes:
        name: the backbone's name (``--backbone``).
        pipe: the diffusers pipeline that denoises and decodes.
    """

    name: ClassVar[str] = ""
    #: The diffusers pipeline class (its name in ``diffusers``).
    pipeline_class: ClassVar[str] = ""
    #: The hub id loaded when no model is given.
    default_model: ClassVar[str] = ""
    #: Words for the model in messages ("SD 1.5 pipeline").
    what: ClassVar[str] = ""
    #: ``guidance_scale`` when none is given (the model family's usual value).
    default_guidance_scale: ClassVar[float] = 7.5

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    @property
    def default_size(self) -> int:
        """The model's native image size in pixels (U-Net sample size × VAE scale factor)."""
        return int(self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)

    @property
    def embedding_dim(self) -> int:
        """The width D of the conditioning vectors the generator reads."""
        raise NotImplementedError

    @property
    def max_noise_level(self) -> int:
        """The largest ``noise_level`` the generator takes (0: it has none)."""
        return 0

    @property
    def image_encoder_owner(self) -> Any:
        """The object holding ``feature_extractor`` and ``image_encoder`` (the conditioning's own image
        space): what calibration, reference images and best-of-N embed images with."""
        if getattr(self.pipe, "image_encoder", None) is None:
            raise UsageError(
                f"the {self.name} backbone was loaded without an image encoder; reference images, "
                "best-of-N and calibration need one (an image_encoder/ folder beside the adapter weights)"
            )
        return self.pipe

    def call_kwargs(
        self,
        embeds: torch.Tensor,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None,
        num_images_per_prompt: int,
        guidance_scale: float,
        noise_level: int,
    ) -> dict[str, Any]:
        """The diffusers call's conditioning keywords for ``embeds`` (N, D) on the pipeline's device and
        dtype: the prompts, the images per prompt and the image conditioning."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """What the image record's ``model`` holds besides the pipeline (empty for unCLIP: its records
        stay as they were before backbones existed)."""
        return {}


class UnCLIPBackbone(Backbone):
    """SD 2.1 unCLIP: the conditioning is ``image_embeds`` (with unCLIP's ``noise_level``)."""

    name = "unclip"
    pipeline_class = "StableUnCLIPImg2ImgPipeline"
    what = "unCLIP pipeline"
    default_guidance_scale = 10.0

    def __init__(self, pipe: Any) -> None:
        if getattr(pipe, "image_encoder", None) is None:
            raise WeightsError("the unCLIP pipeline has no image_encoder; diffusers needs it to generate")
        super().__init__(pipe)

    @property
    def embedding_dim(self) -> int:
        return int(self.pipe.image_encoder.config.projection_dim)

    @property
    def max_noise_level(self) -> int:
        return int(self.pipe.image_noising_scheduler.config.num_train_timesteps) - 1

    @property
    def image_encoder_owner(self) -> Any:
        return self.pipe

    def call_kwargs(
        self,
        embeds: torch.Tensor,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None,
        num_images_per_prompt: int,
        guidance_scale: float,
        noise_level: int,
    ) -> dict[str, Any]:
        return {
            "image_embeds": embeds,
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "num_images_per_prompt": num_images_per_prompt,
            "noise_level": noise_level,
        }


class IPAdapterBackbone(Backbone):
    """A text-to-image pipeline with a ViT-H IP-Adapter: the conditioning is ``ip_adapter_image_embeds``.

    Args:
        pipe: a diffusers SD 1.5 / SDXL pipeline with the adapter loaded (``load_ip_adapter``).
        adapter (`IPAdapterSource`, *optional*): where the adapter came from (recorded).
        ip_scale (`float`, *optional*, defaults to 1.0): the adapter's weight (``set_ip_adapter_scale``),
            finite and >= 0; 0 leaves the image to the text prompt alone.

    Raises:
        WeightsError: the adapter is not a ViT-H global-embedding adapter (a bigG or a "plus" adapter).
    """

    #: The weight file in ``h94/IP-Adapter`` loaded when none is given.
    default_weight: ClassVar[str] = ""

    def __init__(self, pipe: Any, adapter: IPAdapterSource | None = None, ip_scale: float = 1.0) -> None:
        super().__init__(pipe)
        self.adapter = adapter
        projection = getattr(pipe.unet, "encoder_hid_proj", None)
        layers = getattr(projection, "image_projection_layers", None)
        name = adapter.file if adapter else "the adapter"
        if layers is None or len(layers) != 1:
            raise WeightsError(
                f"{name}: the {self.name} backbone needs exactly one IP-Adapter loaded (load_ip_adapter)",
                parameters=["ip_adapter"],
            )
        layer = layers[0]
        if type(layer).__name__ != "ImageProjection":
            raise WeightsError(
                f"{name}: a {type(layer).__name__} adapter reads image patch tokens, not the global ViT-H "
                f"embedding sound lives in; use a ViT-H global adapter ({self.default_weight})",
                parameters=["ip_adapter"],
            )
        width = int(layer.image_embeds.in_features)
        if width != VIT_H_DIM:
            raise WeightsError(
                f"{name}: this adapter reads {width}-d image embeddings (OpenCLIP ViT-bigG is 1280-d), not "
                f"the {VIT_H_DIM}-d ViT-H space of ImageBind's audio vectors; use a ViT-H adapter "
                f"({self.default_weight})",
                parameters=["ip_adapter"],
            )
        self.ip_scale = ip_scale

    @property
    def ip_scale(self) -> float:
        """The adapter's weight in every cross-attention layer (``set_ip_adapter_scale``)."""
        return self._ip_scale

    @ip_scale.setter
    def ip_scale(self, value: float) -> None:
        self._ip_scale = check_number("ip_scale", value, minimum=0.0)
        self.pipe.set_ip_adapter_scale(self._ip_scale)

    @property
    def embedding_dim(self) -> int:
        return int(self.pipe.unet.encoder_hid_proj.image_projection_layers[0].image_embeds.in_features)

    def call_kwargs(
        self,
        embeds: torch.Tensor,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None,
        num_images_per_prompt: int,
        guidance_scale: float,
        noise_level: int,
    ) -> dict[str, Any]:
        """``ip_adapter_image_embeds`` as diffusers' ``prepare_ip_adapter_image_embeds`` reads it: one
        tensor per adapter, (1, 1, D) (one embedding of one image, which diffusers repeats for every
        image of the batch), and with classifier-free guidance the negative first, (2, 1, D): zeros,
        which is what diffusers itself uses as the negative of an ``ip_adapter_image``
        (``encode_image``'s ``torch.zeros_like``).

        Raises:
            UsageError: ``embeds`` has more than one row, or ``noise_level`` is not 0.
        """
        if noise_level:
            raise UsageError(
                f"noise_level is unCLIP's; the {self.name} backbone takes 0, got {noise_level}",
                parameters=["noise_level"],
            )
        if embeds.shape[0] != 1:
            # diffusers repeats each adapter's embeddings batch × images-per-prompt times and the
            # attention processor folds them into the batch: N > 1 rows would mix into every image.
            raise UsageError(
                f"image_embeds: the {self.name} backbone draws one conditioning row per call (diffusers "
                f"shares one IP-Adapter embedding across a batch), got {embeds.shape[0]} rows",
                parameters=["image_embeds"],
            )
        positive = embeds[:, None, :]  # (1, 1, D): one embedding of one image
        guided = guidance_scale > 1 and self.pipe.unet.config.time_cond_proj_dim is None
        stacked = torch.cat([torch.zeros_like(positive), positive]) if guided else positive
        self.pipe.set_ip_adapter_scale(self.ip_scale)
        return {
            "ip_adapter_image_embeds": [stacked],
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "num_images_per_prompt": num_images_per_prompt,
        }

    def record(self) -> dict[str, Any]:
        adapter = self.adapter
        return {
            "backbone": self.name,
            "ip_adapter": None if adapter is None else adapter.name,
            "ip_adapter_revision": None if adapter is None else adapter.revision,
            "ip_adapter_subfolder": None if adapter is None else adapter.subfolder,
            "ip_adapter_weight_name": None if adapter is None else adapter.weight_name,
            "ip_scale": self.ip_scale,
        }

    @classmethod
    def load(
        cls,
        source: ModelSource,
        ip_adapter: str | os.PathLike[str] | None,
        ip_adapter_revision: str | None,
        ip_scale: float,
        kwargs: dict[str, Any],
    ) -> IPAdapterBackbone:
        """Load the pipeline at ``source`` (``kwargs``: dtype, variant, revision) and the adapter into it.

        Raises:
            WeightsError: one line naming ``model`` or ``ip_adapter`` when either cannot be loaded.
        """
        import diffusers

        from sound2image.diffusion.loading import weights_error
        from sound2image.hub import held_library_logs

        check_number("ip_scale", ip_scale, minimum=0.0)
        adapter = resolve_ip_adapter(ip_adapter, cls.default_weight, ip_adapter_revision)
        how = how_to_supply(cls.what)
        pipeline_class = getattr(diffusers, cls.pipeline_class)
        with held_library_logs():
            try:
                pipe = pipeline_class.from_pretrained(source.location, **kwargs)
            except (OSError, ValueError, RuntimeError) as error:
                raise weights_error(source, cls.what, error, how) from error
            adapter_kwargs: dict[str, Any] = {"revision": adapter.revision}
            if adapter.path is None:
                adapter_kwargs.update(hub_kwargs())
            else:
                adapter_kwargs["local_files_only"] = True
            try:
                pipe.load_ip_adapter(
                    adapter.location,
                    subfolder=adapter.subfolder,
                    weight_name=adapter.weight_name,
                    image_encoder_folder=adapter.image_encoder_folder,
                    **adapter_kwargs,
                )
            except (OSError, ValueError, RuntimeError, KeyError) as error:
                detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise WeightsError(
                    f"{adapter.name}: could not load the IP-Adapter {adapter.file} ({detail}); pass "
                    "ip_adapter=FILE with a ViT-H adapter (image_encoder/ beside it) or a local copy of "
                    f"{DEFAULT_IP_ADAPTER}",
                    parameters=["ip_adapter"],
                ) from error
        return cls(pipe, adapter, ip_scale)


class SD15IPBackbone(IPAdapterBackbone):
    """SD 1.5 (or any checkpoint fine-tuned from it) with ``ip-adapter_sd15``."""

    name = "sd15-ip"
    pipeline_class = "StableDiffusionPipeline"
    default_model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    what = "SD 1.5 pipeline"
    default_guidance_scale = 7.5
    default_weight = "models/ip-adapter_sd15.bin"


class SDXLIPBackbone(IPAdapterBackbone):
    """SDXL 1.0 (or any checkpoint fine-tuned from it) with ``ip-adapter_sdxl_vit-h``."""

    name = "sdxl-ip"
    pipeline_class = "StableDiffusionXLPipeline"
    default_model = "stabilityai/stable-diffusion-xl-base-1.0"
    what = "SDXL pipeline"
    default_guidance_scale = 5.0
    default_weight = "sdxl_models/ip-adapter_sdxl_vit-h.bin"


def ip_adapter_parameters(unet: Any) -> list[torch.nn.Parameter]:
    """The adapter's own weights in a U-Net with one IP-Adapter loaded: the image projection
    (``encoder_hid_proj``) and each cross-attention's decoupled ``to_k_ip``/``to_v_ip``, in the order
    :func:`ip_adapter_state_dict` writes them. These are what adapter fine-tuning trains (about 22 M
    values for SD 1.5's adapter, 349 M for SDXL's ViT-H one); everything else stays frozen.

    Raises:
        WeightsError: the U-Net holds no IP-Adapter.
    """
    state = ip_adapter_state_dict(unet, detach=False)
    return [*state["image_proj"].values(), *state["ip_adapter"].values()]


def ip_adapter_state_dict(unet: Any, detach: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """The U-Net's loaded IP-Adapter in the original (h94) format that diffusers' ``load_ip_adapter``
    reads: ``{"image_proj": {"proj.weight", "proj.bias", "norm.weight", "norm.bias"}, "ip_adapter":
    {"1.to_k_ip.weight", "1.to_v_ip.weight", "3.to_k_ip.weight", ...}}`` — the inverse of diffusers'
    ``_convert_ip_adapter_image_proj_to_diffusers`` / ``_convert_ip_adapter_attn_to_diffusers`` (keys
    1, 3, 5, ... over the cross-attention processors in ``unet.attn_processors`` order).

    Raises:
        WeightsError: the U-Net holds no IP-Adapter (or more than one).
    """
    layers = getattr(getattr(unet, "encoder_hid_proj", None), "image_projection_layers", None)
    if layers is None or len(layers) != 1 or type(layers[0]).__name__ != "ImageProjection":
        raise WeightsError("the U-Net holds no (single, ViT-H global) IP-Adapter to export")

    def value(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().cpu().contiguous() if detach else tensor

    projection = layers[0]
    image_proj = {
        "proj.weight": value(projection.image_embeds.weight),
        "proj.bias": value(projection.image_embeds.bias),
        "norm.weight": value(projection.norm.weight),
        "norm.bias": value(projection.norm.bias),
    }
    ip_adapter, key = {}, 1
    for name, processor in unet.attn_processors.items():
        if name.endswith("attn1.processor") or not hasattr(processor, "to_k_ip"):
            continue
        ip_adapter[f"{key}.to_k_ip.weight"] = value(processor.to_k_ip[0].weight)
        ip_adapter[f"{key}.to_v_ip.weight"] = value(processor.to_v_ip[0].weight)
        key += 2
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def save_ip_adapter(unet: Any, path: str | os.PathLike[str]) -> Path:
    """Write the U-Net's IP-Adapter as a file any SD 1.5 / SDXL pipeline of the same architecture loads
    with plain diffusers: ``pipe.load_ip_adapter(folder, subfolder="", weight_name=name)``.

    ``path`` ending in ``.safetensors`` gets diffusers' flat keys (``image_proj.proj.weight``,
    ``ip_adapter.1.to_k_ip.weight``, ...); any other name a torch pickle of the nested state dict
    (h94's ``.bin`` format). Returns the path written.

    Raises:
        WeightsError: the U-Net holds no IP-Adapter.
    """
    state = ip_adapter_state_dict(unet)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        flat = {f"{part}.{key}": tensor for part, values in state.items() for key, tensor in values.items()}
        save_file(flat, str(path))
    else:
        torch.save(state, path)
    return path


#: Every backbone by name (``--backbone``); ``unclip`` is the default.
BACKBONES: dict[str, type[Backbone]] = {
    "unclip": UnCLIPBackbone,
    "sd15-ip": SD15IPBackbone,
    "sdxl-ip": SDXLIPBackbone,
}


def backbone_class(name: str) -> type[Backbone]:
    """The backbone class called ``name``; UsageError naming ``backbone`` for another name."""
    if name not in BACKBONES:
        raise UsageError(
            f"backbone must be one of {', '.join(BACKBONES)}, got {name!r}", parameters=["backbone"]
        )
    return BACKBONES[name]


def local_calibration_dirs(source: ModelSource, adapter: IPAdapterSource | None) -> list[Path]:
    """Where a stored calibration is looked for, first found wins: beside the adapter weights (the
    adapter's own image space was measured), then the model directory."""
    folders = []
    if adapter is not None and adapter.path is not None:
        folders.append(adapter.path / adapter.subfolder if adapter.subfolder else adapter.path)
    if source.path is not None:
        folders.append(source.path)
    return folders


__all__ = [
    "BACKBONES",
    "DEFAULT_IP_ADAPTER",
    "Backbone",
    "IPAdapterBackbone",
    "IPAdapterSource",
    "SD15IPBackbone",
    "SDXLIPBackbone",
    "UnCLIPBackbone",
    "backbone_class",
    "ip_adapter_parameters",
    "ip_adapter_state_dict",
    "local_calibration_dirs",
    "resolve_ip_adapter",
    "save_ip_adapter",
]
