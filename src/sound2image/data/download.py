"""Fetch the ADVANCE dataset (Hu et al. 2020, Zenodo record 3828124, CC BY 4.0) into one folder.

:func:`download_advance` downloads the two archives of the record (``ADVANCE_vision.zip``,
``ADVANCE_sound.zip``; URLs and md5 sums as torchgeo's ADVANCE dataset uses them), each into
``DIR/.download/<file>.part``, resuming an interrupted download with an HTTP ``Range`` request. It
verifies the md5 sum before anything is unpacked, checks every member of the archive before anything
is written (no absolute path, no ``..``, no link or special file: every member must land inside
``DIR``), unpacks into a hidden folder inside ``DIR`` and only then moves the finished folder into
place, so ``DIR/vision`` and ``DIR/sound`` exist only when complete. The result is the layout
:mod:`sound2image.data.advance` scans: ``DIR/vision/<class>/<id>.jpg`` and ``DIR/sound/<class>/<id>.wav``
(an archive whose folder carries the authors' name, ``Dataset_v3_vision``, or sits inside one wrapper
folder, is accepted and unpacked under the plain name).

Without network access, download the archives by hand and put them at ``DIR/.download/ADVANCE_vision.zip``
and ``DIR/.download/ADVANCE_sound.zip``: they are picked up, verified and unpacked. Nothing is written
outside ``DIR``. Hidden entries (``.download``) are ignored by the dataset scanner.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from sound2image.errors import DataError, UsageError

#: Hidden folder inside the dataset folder holding partial downloads, archives and markers.
DOWNLOAD_FOLDER = ".download"
#: Bytes read per chunk (download and hashing).
CHUNK_BYTES = 1 << 20
#: Seconds to wait before retrying an interrupted download (multiplied by the attempt number).
RETRY_WAIT_S = 2.0


@dataclass(frozen=True)
class Archive:
    """One archive of a dataset.

    Attributes:
        name: short key (``"vision"``), used by the ``urls``/``md5s`` overrides.
        url: where it is downloaded from.
        md5: its md5 sum (32 lowercase hex digits).
        file: the archive's file name (``ADVANCE_vision.zip``), the name to give a hand-downloaded copy.
        folder: the folder it provides inside the dataset folder (``vision``).
        other_names: other names the folder may carry inside the archive (the authors' ``Dataset_v3_vision``).
        size: its size in bytes, when known (``None``: taken from the server's ``Content-Length``).
    """

    name: str
    url: str
    md5: str
    file: str
    folder: str
    other_names: tuple[str, ...] = ()
    size: int | None = None


ZENODO_RECORD = "https://zenodo.org/records/3828124/files"

#: The ADVANCE archives (REFERENCE.md §5; the facts torchgeo's ADVANCE dataset uses).
ADVANCE_ARCHIVES: tuple[Archive, ...] = (
    Archive(
        name="vision",
        url=f"{ZENODO_RECORD}/ADVANCE_vision.zip?download=1",
        md5="a9e8748219ef5864d3b5a8979a67b471",
        file="ADVANCE_vision.zip",
        folder="vision",
        other_names=("Dataset_v3_vision",),
    ),
    Archive(
        name="sound",
        url=f"{ZENODO_RECORD}/ADVANCE_sound.zip?download=1",
        md5="a2d12f2d2a64f5c3d3a9d8c09aaf1c31",
        file="ADVANCE_sound.zip",
        folder="sound",
        other_names=("Dataset_v3_sound",),
    ),
)

_MD5 = re.compile(r"[0-9a-f]{32}")


def mirror_urls(base: str) -> dict[str, str]:
    """``{name: base/<file>}`` for each archive: the URLs on a mirror that serves the same file names.

    >>> mirror_urls("http://mirror.example/advance/")["sound"]
    'http://mirror.example/advance/ADVANCE_sound.zip'
    """
    return {archive.name: f"{base.rstrip('/')}/{archive.file}" for archive in ADVANCE_ARCHIVES}


def download_advance(
    directory: str | os.PathLike[str],
    *,
    urls: Mapping[str, str] | None = None,
    md5s: Mapping[str, str] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    retries: int = 2,
    keep_archives: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download, verify and unpack ADVANCE into ``directory``; return the dataset folder.

    Each archive is skipped when its folder was already unpacked by an earlier run (a marker in
    ``directory/.download``), and not downloaded again when its ``.zip`` is already there (verified
    before use). Run :func:`sound2image.data.check.check_dataset` on the result to see what it holds.

    Args:
        directory: the dataset folder (created if missing); nothing is written outside it.
        urls: ``{"vision": URL, "sound": URL}`` overrides of the Zenodo URLs (a mirror: :func:`mirror_urls`).
        md5s: overrides of the md5 sums, same keys (only for archives repacked on purpose).
        progress: show a tqdm progress bar (bytes) on stderr.
        timeout: seconds to wait for the server to connect or to send the next bytes.
        retries: how many times an interrupted download is resumed within this call.
        keep_archives: keep the verified ``.zip`` files in ``directory/.download`` after unpacking
            (default: delete them, leaving only a marker).
        log: called with one line per step (``None``: silent).

    Returns:
        ``directory`` as a :class:`~pathlib.Path`.

    Raises:
        UsageError: a bad argument (unknown key in ``urls``/``md5s``, a malformed md5, ``timeout`` <= 0).
        DataError: one line naming the URL or file: the server cannot be reached (with where to put a
            hand-downloaded copy), an HTTP error, an interrupted download (run again to resume), an md5
            mismatch (the file is renamed ``*.bad`` so that a rerun downloads it again), an archive that
            is not a zip or has a member that would land outside ``directory`` (nothing is unpacked),
            a target folder that exists but was not unpacked by this function, too little disk space.
    """
    archives = _resolve_archives(urls, md5s)
    if not (isinstance(timeout, (int, float)) and timeout > 0 and timeout == timeout):
        raise UsageError(
            f"timeout must be a positive number of seconds, got {timeout!r}", parameters=["timeout"]
        )
    if not (isinstance(retries, int) and retries >= 0):
        raise UsageError(f"retries must be an integer >= 0, got {retries!r}", parameters=["retries"])
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not a folder")
    say = log or (lambda line: None)
    downloads = root / DOWNLOAD_FOLDER
    downloads.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        marker = downloads / f"{archive.file}.done"
        target = root / archive.folder
        if marker.is_file() and target.is_dir():
            say(f"{archive.name}: already unpacked in {target}")
            continue
        if target.exists():
            raise DataError(
                f"{target}: already exists but was not unpacked by this command; "
                f"move it away to download {archive.file} again"
            )
        zip_path = downloads / archive.file
        if zip_path.is_file():
            say(f"{archive.name}: using {zip_path}")
        else:
            _download(archive, downloads, progress=progress, timeout=timeout, retries=retries, say=say)
        _verify(archive, zip_path)
        say(f"{archive.name}: md5 {archive.md5} verified")
        _unpack(archive, zip_path, root)
        marker.write_text(
            json.dumps({"url": archive.url, "md5": archive.md5, "folder": archive.folder}) + "\n",
            encoding="utf-8",
        )
        if not keep_archives:
            zip_path.unlink()
        say(f"{archive.name}: unpacked into {target}")
    return root


def _resolve_archives(urls: Mapping[str, str] | None, md5s: Mapping[str, str] | None) -> list[Archive]:
    """The archive table with the overrides applied, each override checked."""
    names = [archive.name for archive in ADVANCE_ARCHIVES]
    for parameter, overrides in (("urls", urls), ("md5s", md5s)):
        unknown = sorted(set(overrides or {}) - set(names))
        if unknown:
            raise UsageError(
                f"{parameter} has unknown archive name(s) {', '.join(unknown)}; "
                f"expected {' or '.join(names)}",
                parameters=[parameter],
            )
    archives = []
    for archive in ADVANCE_ARCHIVES:
        url = (urls or {}).get(archive.name, archive.url)
        md5 = (md5s or {}).get(archive.name, archive.md5).lower()
        if not _MD5.fullmatch(md5):
            raise UsageError(
                f"md5s[{archive.name!r}] must be 32 hexadecimal digits, got {md5!r}", parameters=["md5s"]
            )
        if not url.startswith(("http://", "https://")):
            raise UsageError(
                f"urls[{archive.name!r}] must be an http(s) URL, got {url!r}", parameters=["urls"]
            )
        archives.append(replace(archive, url=url, md5=md5))
    return archives


def _by_hand(archive: Archive, downloads: Path) -> str:
    return (
        f"download it by hand and put it at {downloads / archive.file} "
        "(it is verified and unpacked on the next run)"
    )


def _download(
    archive: Archive,
    downloads: Path,
    *,
    progress: bool,
    timeout: float,
    retries: int,
    say: Callable[[str], None],
) -> None:
    """Fetch ``archive`` into ``downloads/<file>.part`` (resuming), then rename it ``<file>``.

    Raises:
        DataError: unreachable server, HTTP error, or still interrupted after ``retries`` resumes.
    """
    part = downloads / f"{archive.file}.part"
    for attempt in range(retries + 1):
        try:
            _fetch(archive, part, downloads, progress=progress, timeout=timeout, say=say)
        except _Interrupted as interrupted:
            if attempt == retries:
                raise DataError(
                    f"{archive.url}: download interrupted ({interrupted}); "
                    f"{part.stat().st_size} bytes kept in {part}: run the command again to resume"
                ) from None
            say(f"{archive.name}: download interrupted ({interrupted}); resuming")
            time.sleep(RETRY_WAIT_S * (attempt + 1))
            continue
        os.replace(part, downloads / archive.file)
        return


class _Interrupted(Exception):
    """The connection broke after the transfer had started (the part file is kept for a resume)."""


def _fetch(
    archive: Archive,
    part: Path,
    downloads: Path,
    *,
    progress: bool,
    timeout: float,
    say: Callable[[str], None],
) -> None:
    """One request: append to ``part`` from its current size (or restart when the server ignores Range)."""
    from sound2image import __version__

    start = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": f"sound2image/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(archive.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and start:  # nothing left after `start`: the part is complete (or too long)
            say(f"{archive.name}: {part.name} already complete ({start} bytes)")
            return
        raise DataError(
            f"{archive.url}: HTTP {error.code} {error.reason}; {_by_hand(archive, downloads)}"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise DataError(
            f"{archive.url}: cannot download ({_one_line(reason)}); {_by_hand(archive, downloads)}"
        ) from None
    with response:
        if start and response.status == 206 and _range_start(response) != start:
            part.unlink()  # a range we did not ask for: start again from the first byte
            raise _Interrupted(f"the server sent bytes from {_range_start(response)}, not {start}")
        if start and response.status != 206:
            say(f"{archive.name}: the server does not resume downloads; starting again")
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else archive.size
        if total is not None:
            _check_space(downloads, total - start, archive.url)
        say(f"{archive.name}: downloading {archive.url}" + (f" ({total} bytes)" if total else ""))
        received = start
        with (
            _progress_bar(archive.file, total, start, progress) as bar,
            part.open("ab" if start else "wb") as out,
        ):
            try:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as error:
                raise _Interrupted(f"after {received} of {total or '?'} bytes: {_one_line(error)}") from None
    if total is not None and received < total:
        raise _Interrupted(f"connection closed after {received} of {total} bytes")


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """The first byte of a 206 response's ``Content-Range: bytes START-END/TOTAL``."""
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _progress_bar(name: str, total: int | None, initial: int, enabled: bool) -> Any:
    """A tqdm bar in bytes (on stderr)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
    )


def _one_line(error: object) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _check_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DataError(f"{what}: needs {needed} bytes but only {free} are free in {folder}")


def file_md5(path: str | os.PathLike[str]) -> str:
    """The md5 sum of a file as 32 lowercase hex digits (read in 1 MiB chunks)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(archive: Archive, path: Path) -> None:
    """Refuse (and rename to ``*.bad``) a file whose md5 differs from the archive's."""
    actual = file_md5(path)
    if actual != archive.md5:
        bad = path.with_name(f"{path.name}.bad")
        os.replace(path, bad)
        raise DataError(
            f"{path}: md5 mismatch, expected {archive.md5}, got {actual}; nothing unpacked, the file was "
            f"moved to {bad.name} and the next run downloads it again"
        )


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member could land outside the target folder (or is not a plain file/folder), else None."""
    name = info.filename
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix):
        return "absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "'..' in the path"
    if "\x00" in name:
        return "NUL in the name"
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "not a plain file or folder"
    return None


def _content_folder(archive: Archive, names: list[str], path: Path) -> str:
    """The archive's folder that holds the classes: ``vision``, ``Dataset_v3_vision`` or ``X/vision``.

    Raises:
        DataError: the archive holds none of the accepted names.
    """
    accepted = (archive.folder, *archive.other_names)
    parts = [PurePosixPath(name.replace("\\", "/")).parts for name in names]
    tops = {p[0] for p in parts if p and p[0] != "__MACOSX"}
    for folder in accepted:
        if folder in tops:
            return folder
    if len(tops) == 1:
        wrapper = next(iter(tops))
        seconds = {p[1] for p in parts if len(p) > 1 and p[0] == wrapper}
        for folder in accepted:
            if folder in seconds:
                return f"{wrapper}/{folder}"
    raise DataError(
        f"{path}: holds no {' or '.join(name + '/' for name in accepted)} folder "
        f"(top level: {', '.join(sorted(tops)) or 'nothing'}); nothing unpacked"
    )


def _unpack(archive: Archive, path: Path, root: Path) -> None:
    """Check every member, unpack into a hidden folder inside ``root``, then move the folder into place.

    Raises:
        DataError: not a zip, an unsafe member (the whole archive is refused before anything is written),
            a missing content folder, too little disk space.
    """
    staging = root / DOWNLOAD_FOLDER / f"{archive.file}.unpacking"
    try:
        with zipfile.ZipFile(path) as bundle:
            members = bundle.infolist()
            for info in members:
                reason = _unsafe_reason(info)
                if reason is not None:
                    raise DataError(
                        f"{path}: unsafe member {info.filename!r} ({reason}); the archive is refused and "
                        "nothing was unpacked"
                    )
            inside = _content_folder(archive, [info.filename for info in members], path)
            _check_space(root, sum(info.file_size for info in members), str(path))
            if staging.exists():  # left by an interrupted run
                shutil.rmtree(staging)
            staging.mkdir()
            limit = staging.resolve()
            for info in members:
                destination = (staging / info.filename.replace("\\", "/")).resolve()
                if destination != limit and limit not in destination.parents:  # belt and braces
                    raise DataError(f"{path}: member {info.filename!r} resolves outside {staging}; refused")
                bundle.extract(info, staging)
    except zipfile.BadZipFile as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{path}: not a valid zip archive ({_one_line(error)}); nothing unpacked") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.replace(staging / inside, root / archive.folder)
    shutil.rmtree(staging, ignore_errors=True)
