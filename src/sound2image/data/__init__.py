"""Paired audio/image datasets: scanning layouts, the grouped split, robust loading and checks.

>>> from sound2image.data import scan_pairs, split_pairs
>>> scan = scan_pairs("ADVANCE/")              # or a pairs.csv / .jsonl manifest, or a same-stem folder
>>> split = split_pairs(scan.pairs)             # 90/10, seed 42, grouped by location, stratified
>>> split.save("runs/soundiff/split.json")
>>> download_advance("ADVANCE/")              # the paper's data: resumable, md5-checked, safe unpack
"""

from sound2image.data.advance import location_of
from sound2image.data.download import download_advance
from sound2image.data.images import ImageInfo, load_image, prepare_image, probe_image
from sound2image.data.pairs import AUDIO_SUFFIXES, IMAGE_SUFFIXES, Pair, PairScan, scan_pairs
from sound2image.data.robust import BadItems, load_all, load_each
from sound2image.data.split import Split, SplitSettings, load_or_create_split, pairs_fingerprint, split_pairs

__all__ = [
    "AUDIO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "BadItems",
    "download_advance",
    "prepare_image",
    "ImageInfo",
    "Pair",
    "PairScan",
    "Split",
    "SplitSettings",
    "load_all",
    "load_each",
    "load_image",
    "load_or_create_split",
    "location_of",
    "pairs_fingerprint",
    "probe_image",
    "scan_pairs",
    "split_pairs",
]
