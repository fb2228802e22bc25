"""`sound2image data download advance DIR` against a loopback HTTP server serving small ADVANCE-like zips.

The archives are built here from three real pairs of ``pseudo-advance`` (two airport, one beach), so the
expected facts are known independently of the code: 3 pairs in 2 classes, each unpacked file byte-equal
to its source, and md5 sums computed with hashlib over the bytes we built.
"""

from __future__ import annotations

import hashlib
import io
import socket
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sound2image.cli.main import main
from sound2image.data import download as download_module
from sound2image.data import scan_pairs
from sound2image.data.download import ADVANCE_ARCHIVES, download_advance, mirror_urls
from sound2image.errors import DataError, UsageError
from tests.data.http_server import ArchiveServer
from tests.paths import PSEUDO_ADVANCE

#: (class, id) of the pairs copied into the archives.
PAIRS = (("airport", "00001"), ("airport", "00002"), ("beach", "00017"))
VISION, SOUND = "ADVANCE_vision.zip", "ADVANCE_sound.zip"


def build_zip(members: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    """A zip (stored, no compression: fast) with these members, plus symlink entries name -> target."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            bundle.writestr(info, target)
    return buffer.getvalue()


def advance_archives(vision: str = "vision", sound: str = "sound", wrapper: str = "") -> dict[str, bytes]:
    """``{file name: zip bytes}`` for the two archives, holding ``PAIRS`` under the given folder names."""
    prefix = f"{wrapper}/" if wrapper else ""
    images = {
        f"{prefix}{vision}/{label}/{item}.jpg": (
            PSEUDO_ADVANCE / "vision" / label / f"{item}.jpg"
        ).read_bytes()
        for label, item in PAIRS
    }
    sounds = {
        f"{prefix}{sound}/{label}/{item}.wav": (PSEUDO_ADVANCE / "sound" / label / f"{item}.wav").read_bytes()
        for label, item in PAIRS
    }
    return {VISION: build_zip(images), SOUND: build_zip(sounds)}


def md5s_of(files: dict[str, bytes]) -> dict[str, str]:
    return {"vision": hashlib.md5(files[VISION]).hexdigest(), "sound": hashlib.md5(files[SOUND]).hexdigest()}


def assert_unpacked(root: Path) -> None:
    """The ADVANCE layout with each file byte-equal to its source, and nothing else but .download."""
    assert sorted(p.name for p in root.iterdir()) == [".download", "sound", "vision"]
    for label, item in PAIRS:
        for side, suffix in (("vision", "jpg"), ("sound", "wav")):
            got = root / side / label / f"{item}.{suffix}"
            assert got.read_bytes() == (PSEUDO_ADVANCE / side / label / f"{item}.{suffix}").read_bytes()
    assert len(list((root / "vision").rglob("*.jpg"))) == len(PAIRS)
    assert len(list((root / "sound").rglob("*.wav"))) == len(PAIRS)


def tree(folder: Path) -> set[str]:
    """Every path under ``folder`` (relative), to show that nothing appeared or vanished."""
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def closed_port() -> int:
    """A loopback port nobody listens on (bound, read, released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "RETRY_WAIT_S", 0.0)


@pytest.fixture
def serve() -> Iterator:
    servers: list[ArchiveServer] = []

    def start(files: dict[str, bytes], **options: object) -> ArchiveServer:
        servers.append(ArchiveServer(files, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def with_md5s(monkeypatch: pytest.MonkeyPatch, md5s: dict[str, str]) -> None:
    """Make the CLI's built-in table expect our archives' md5 sums (the real ones are Zenodo's)."""
    table = tuple(replace(archive, md5=md5s[archive.name]) for archive in ADVANCE_ARCHIVES)
    monkeypatch.setattr(download_module, "ADVANCE_ARCHIVES", table)


def fetch(root: Path, server: ArchiveServer, files: dict[str, bytes], **options: object) -> Path:
    return download_advance(
        root, urls=mirror_urls(server.base), md5s=md5s_of(files), progress=False, timeout=5.0, **options
    )


def test_the_archive_table_holds_the_reference_facts() -> None:
    """REFERENCE.md §5: the Zenodo URLs and md5 sums torchgeo uses."""
    table = {archive.name: archive for archive in ADVANCE_ARCHIVES}
    assert table["vision"].url == "https://zenodo.org/records/3828124/files/ADVANCE_vision.zip?download=1"
    assert table["vision"].md5 == "a9e8748219ef5864d3b5a8979a67b471"
    assert table["sound"].url == "https://zenodo.org/records/3828124/files/ADVANCE_sound.zip?download=1"
    assert table["sound"].md5 == "a2d12f2d2a64f5c3d3a9d8c09aaf1c31"
    assert mirror_urls("http://m.example/a/") == {
        "vision": "http://m.example/a/ADVANCE_vision.zip",
        "sound": "http://m.example/a/ADVANCE_sound.zip",
    }


def test_full_download_through_the_cli_unpacks_and_prints_the_check(
    tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = advance_archives()
    server = serve(files)
    with_md5s(monkeypatch, md5s_of(files))
    root = tmp_path / "ADVANCE"
    code = main(["data", "download", "advance", str(root), "--mirror", server.base + "/"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert_unpacked(root)
    lines = out.splitlines()
    # The same report as `data check DIR`: 3 pairs in 2 classes, as built.
    assert "ADVANCE: 3 pairs in 2 classes (advance layout), no problems" in lines
    assert "pairs: 3" in lines and "classes: 2" in lines
    assert any(line.split() == ["airport", "2"] for line in lines)
    assert any(line.split() == ["beach", "1"] for line in lines)
    assert out.index("md5") < out.index("pairs: 3")  # the check comes last
    assert server.requests == [(VISION, None), (SOUND, None)]
    # The progress bar (tqdm, on stderr) names the file and counts bytes.
    assert VISION in err and "Traceback" not in err
    # The verified archives are deleted after unpacking; a marker per archive stays.
    assert sorted(p.name for p in (root / ".download").iterdir()) == [f"{SOUND}.done", f"{VISION}.done"]

    # A second run downloads nothing and prints the same report.
    code = main(["data", "download", "advance", str(root), "--mirror", server.base, "--no-progress"])
    out2, err2 = capsys.readouterr()
    assert code == 0 and len(server.requests) == 2 and err2 == ""
    assert "vision: already unpacked" in out2 and "pairs: 3" in out2.splitlines()


def test_resume_after_a_cut_connection_on_the_next_run(tmp_path: Path, serve) -> None:
    files = advance_archives()
    cut = 100_000
    server = serve(files, cut_after={VISION: cut})
    root = tmp_path / "ADVANCE"
    with pytest.raises(DataError) as error:
        fetch(root, server, files, retries=0)
    message = str(error.value)
    assert message.startswith(
        f"{server.base}/{VISION}: download interrupted (connection closed after {cut} of"
    )
    assert "run the command again to resume" in message and "\n" not in message
    part = root / ".download" / f"{VISION}.part"
    assert part.read_bytes() == files[VISION][:cut]
    assert not (root / "vision").exists()

    fetch(root, server, files)
    assert server.requests == [(VISION, None), (VISION, f"bytes={cut}-"), (SOUND, None)]
    assert_unpacked(root)


def test_resume_within_one_run(tmp_path: Path, serve) -> None:
    files = advance_archives()
    server = serve(files, cut_after={SOUND: 5000})
    fetch(tmp_path / "d", server, files)  # retries=2 by default
    assert server.requests == [(VISION, None), (SOUND, None), (SOUND, "bytes=5000-")]
    assert_unpacked(tmp_path / "d")


def test_a_server_that_ignores_range_restarts_cleanly(tmp_path: Path, serve) -> None:
    files = advance_archives()
    server = serve(files, honour_range=False, cut_after={VISION: 70_000})
    root = tmp_path / "d"
    with pytest.raises(DataError, match="download interrupted"):
        fetch(root, server, files, retries=0)
    fetch(root, server, files)
    # It asked to resume, got the whole file with 200, and wrote it from the start (no duplicated bytes).
    assert server.requests[:2] == [(VISION, None), (VISION, "bytes=70000-")]
    assert_unpacked(root)


def test_a_complete_part_file_answered_with_416_is_verified_and_unpacked(tmp_path: Path, serve) -> None:
    files = advance_archives()
    server = serve(files)
    root = tmp_path / "d"
    (root / ".download").mkdir(parents=True)
    (root / ".download" / f"{VISION}.part").write_bytes(files[VISION])  # killed after the last byte
    fetch(root, server, files)
    assert server.requests[0] == (VISION, f"bytes={len(files[VISION])}-")
    assert_unpacked(root)


def test_a_wrong_checksum_is_refused_and_nothing_is_unpacked(tmp_path: Path, serve) -> None:
    files = advance_archives()
    server = serve(files)
    root = tmp_path / "d"
    expected = "0" * 32
    actual = hashlib.md5(files[VISION]).hexdigest()
    with pytest.raises(DataError) as error:
        download_advance(
            root, urls=mirror_urls(server.base), md5s={"vision": expected}, progress=False, timeout=5.0
        )
    zip_path = root / ".download" / VISION
    assert str(error.value) == (
        f"{zip_path}: md5 mismatch, expected {expected}, got {actual}; nothing unpacked, the file was "
        f"moved to {VISION}.bad and the next run downloads it again"
    )
    assert tree(root) == {".download", f".download/{VISION}.bad"}

    # The rerun downloads it again from the first byte (no Range) and, with the right sum, unpacks.
    fetch(root, server, files)
    assert server.requests == [(VISION, None), (VISION, None), (SOUND, None)]
    assert_unpacked(root)


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../evil.txt", "'..' in the path"),
        ("vision/../../../../evil.txt", "'..' in the path"),
        ("/tmp/sound2image-test-evil.txt", "absolute path"),
        ("C:/evil.txt", "absolute path"),
    ],
)
def test_an_archive_with_an_escaping_member_is_refused(
    tmp_path: Path, serve, member: str, reason: str
) -> None:
    files = advance_archives()
    good = zipfile.ZipFile(io.BytesIO(files[VISION]))
    members = {info.filename: good.read(info) for info in good.infolist()}
    files[VISION] = build_zip({**members, member: b"escaped"})  # the bad member comes last
    server = serve(files)
    parent = tmp_path / "parent"
    (parent / "sibling").mkdir(parents=True)
    before = tree(tmp_path)
    root = parent / "ADVANCE"
    with pytest.raises(DataError) as error:
        fetch(root, server, files)
    zip_path = root / ".download" / VISION
    assert str(error.value) == (
        f"{zip_path}: unsafe member {member!r} ({reason}); the archive is refused and nothing was unpacked"
    )
    # Nothing outside DIR changed, and inside it only the (verified) archive sits in .download.
    assert {p for p in tree(tmp_path) if not p.startswith("parent/ADVANCE")} == before
    assert tree(root) == {".download", f".download/{VISION}"}
    assert not Path("/tmp/sound2image-test-evil.txt").exists()


def test_an_archive_with_a_symlink_is_refused(tmp_path: Path, serve) -> None:
    files = advance_archives()
    files[SOUND] = build_zip(
        {"sound/beach/00017.wav": b"x"}, symlinks={"sound/airport/00001.wav": "/etc/passwd"}
    )
    server = serve(files)
    root = tmp_path / "d"
    with pytest.raises(DataError, match=r"unsafe member 'sound/airport/00001.wav' \(symbolic link\)"):
        fetch(root, server, files)
    assert not (root / "sound").exists()
    assert not any(p.is_symlink() for p in root.rglob("*"))


def test_offline_is_one_line_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ADVANCE"
    base = f"http://127.0.0.1:{closed_port()}"
    code = main(["data", "download", "advance", str(root), "--mirror", base, "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2  # DataError
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"error: {base}/{VISION}: cannot download (")
    assert "refused" in err.lower()
    assert err.rstrip("\n").endswith(
        f"download it by hand and put it at {root / '.download' / VISION} "
        "(it is verified and unpacked on the next run)"
    )
    assert not (root / "vision").exists()


def test_a_server_that_never_answers_times_out_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/{VISION}"
        with pytest.raises(DataError) as error:
            download_advance(tmp_path / "d", urls={"vision": url}, progress=False, timeout=0.2)
    assert str(error.value).startswith(f"{url}: cannot download (timed out); download it by hand")


def test_hand_downloaded_archives_are_picked_up_offline(tmp_path: Path) -> None:
    files = advance_archives()
    root = tmp_path / "d"
    (root / ".download").mkdir(parents=True)
    for name, data in files.items():
        (root / ".download" / name).write_bytes(data)
    offline = mirror_urls(f"http://127.0.0.1:{closed_port()}")
    download_advance(root, urls=offline, md5s=md5s_of(files), progress=False, keep_archives=True)
    assert_unpacked(root)
    assert (root / ".download" / VISION).read_bytes() == files[VISION]  # kept on request


def test_the_authors_folder_names_inside_a_wrapper_are_accepted(tmp_path: Path, serve) -> None:
    files = advance_archives("Dataset_v3_vision", "Dataset_v3_sound", wrapper="ADVANCE")
    server = serve(files)
    root = fetch(tmp_path / "d", server, files)
    assert_unpacked(root)  # unpacked under the plain names
    scan = scan_pairs(root)
    assert len(scan.pairs) == len(PAIRS) and scan.problems == []


def test_an_http_error_names_the_url_and_status(tmp_path: Path, serve) -> None:
    server = serve({})
    with pytest.raises(DataError) as error:
        download_advance(tmp_path / "d", urls=mirror_urls(server.base), progress=False, timeout=5.0)
    assert str(error.value).startswith(f"{server.base}/{VISION}: HTTP 404 Not Found; download it by hand")


def test_an_existing_folder_is_not_overwritten(tmp_path: Path, serve) -> None:
    files = advance_archives()
    server = serve(files)
    (tmp_path / "d" / "vision").mkdir(parents=True)
    with pytest.raises(DataError, match="already exists but was not unpacked by this command"):
        fetch(tmp_path / "d", server, files)
    assert server.requests == []


@pytest.mark.parametrize(
    ("options", "message", "parameter"),
    [
        ({"urls": {"images": "http://x/"}},
         "urls has unknown archive name(s) images; expected vision or sound", "urls"),
        ({"md5s": {"vision": "abc"}}, "md5s['vision'] must be 32 hexadecimal digits, got 'abc'", "md5s"),
        ({"urls": {"vision": "ftp://x/"}}, "urls['vision'] must be an http(s) URL, got 'ftp://x/'", "urls"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, got 0", "timeout"),
    ],
)  # fmt: skip
def test_bad_arguments_name_the_parameter(
    tmp_path: Path, options: dict, message: str, parameter: str
) -> None:
    with pytest.raises(UsageError) as error:
        download_advance(tmp_path / "d", progress=False, **options)
    assert str(error.value) == message and error.value.parameters == (parameter,)
    assert not (tmp_path / "d").exists()


def test_the_cli_names_its_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "download", "advance", str(tmp_path / "d"), "--timeout", "-1"])
    assert code == 2
    assert capsys.readouterr().err == "error: --timeout must be finite and > 0, got -1.0\n"
