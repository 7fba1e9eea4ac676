"""`robust data download`: against a loopback HTTP server serving archives built here (no network)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from robust.errors import DataError
from robust_datasets import download
from robust_datasets.download import Archive, download_dataset

FILES = {"metadata.csv": b"img_id,y\n1,0\n2,1\n", "images/001.Bird/a.jpg": b"\xff\xd8 not really a jpeg " * 40}
NEW_FILES = {"metadata.csv": b"img_id,y\n1,1\n", "images/b.jpg": b"new" * 100}


# -- fixture archives ---------------------------------------------------------------------------


def make_tar(files: dict[str, bytes], prefix: str = "toyset/") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def make_zip(files: dict[str, bytes], prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(prefix + name, content)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[str]:
    """Temporary folders of an unpack (or of a replaced folder) left in the data root."""
    return sorted(p.name for p in root.iterdir() if p.name.endswith((".extracting", ".old")))


# -- loopback server ----------------------------------------------------------------------------


@dataclass
class Loopback:
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, object]] = field(default_factory=list)
    ignore_range: bool = False
    truncate_next: bool = False  # send half the body of the next response, then hang up
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(state: Loopback) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            record: dict[str, object] = {"path": self.path, "range": self.headers.get("Range"), "sent": 0}
            state.requests.append(record)
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                record["status"] = 404
                return
            start, status = 0, 200
            requested = self.headers.get("Range")
            if requested and not state.ignore_range:
                start = int(requested.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    record["status"] = 416
                    return
                status = 206
            payload = body[start:]
            self.send_response(status)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if state.truncate_next:
                state.truncate_next = False
                payload = payload[: len(payload) // 2]
            self.wfile.write(payload)
            record.update(status=status, sent=len(payload))

    return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Loopback]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    state = Loopback()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def entry(server: Loopback, data: bytes, *, fmt: str = "tar.gz", checksum: str | None = "", **changes) -> Archive:
    """A table entry for the toy dataset served at /toyset.<fmt>; checksum "" = the right SHA-256."""
    path = f"/toyset.{fmt}"
    server.files[path] = data
    values = {
        "name": "toy",
        "urls": (server.url(path),),
        "file": f"toyset.{fmt}",
        "checksum": sha256(data) if checksum == "" else checksum,
        "format": fmt,
        "folder": "toy-folder",
        "member": "toyset",
        **changes,
    }
    return Archive(**values)


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch):
    """``table(*archives)`` makes them the whole download table."""

    def install(*archives: Archive) -> None:
        monkeypatch.setattr(download, "ARCHIVES", {a.name: a for a in archives})

    return install


# -- the real table -----------------------------------------------------------------------------


def test_table_folders_are_the_registrations_folders():
    from robust_datasets.plugin import register_datasets

    folders: dict[str, str | None] = {}
    register_datasets(register=lambda name, *args, **meta: folders.__setitem__(name, meta.get("folder")))
    assert download.ARCHIVES, "the table is empty"
    for archive in download.ARCHIVES.values():
        for name in (archive.name, *archive.aliases):
            assert folders.get(name) == archive.folder, name
        assert archive.member == archive.folder  # these releases unpack to a folder of that name
        assert all(url.startswith("https://") for url in archive.urls)
        assert archive.file == archive.urls[0].rsplit("/", 1)[1]
        if archive.checksum is not None:
            algorithm, _, digest = archive.checksum.partition(":")
            assert len(digest) == hashlib.new(algorithm).digest_size * 2
            int(digest, 16)
    assert download.ARCHIVES["cifar10"].checksum == "md5:c58f30108f718f92721af3b95e74349a"
    assert download.ARCHIVES["cifar100"].checksum == "md5:eb9058c3a382ffc7106e4002c42a8d85"
    assert download.find_archive("cifar10-lt").name == "cifar10"


def test_import_does_not_import_torch():
    code = (
        "import sys, robust_datasets.commands, robust_datasets.download; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# -- download, verify, unpack -------------------------------------------------------------------


def test_download_verifies_and_unpacks_into_place(server, table, tmp_path, capsys):
    table(entry(server, make_tar(FILES)))
    target = download_dataset("toy", tmp_path)
    assert target == tmp_path / "toy-folder"
    assert tree(target) == FILES
    assert [r["range"] for r in server.requests] == [None]
    assert sorted(os.listdir(tmp_path / ".downloads")) == []  # archive deleted, no .part
    assert leftovers(tmp_path) == []
    assert "SHA256 verified" in capsys.readouterr().out


def test_zip_with_md5_and_files_at_its_top_level(server, table, tmp_path):
    data = make_zip(FILES)
    table(entry(server, data, fmt="zip", checksum="md5:" + hashlib.md5(data).hexdigest(), member=""))
    target = download_dataset("toy", tmp_path)
    assert tree(target) == FILES


def test_unpublished_checksum_prints_the_sha256_and_says_unverified(server, table, tmp_path, capsys):
    data = make_tar(FILES)
    table(entry(server, data, checksum=None))
    download_dataset("toy", tmp_path)
    out = capsys.readouterr().out
    assert hashlib.sha256(data).hexdigest() in out
    assert "Not verified" in out
    assert tree(tmp_path / "toy-folder") == FILES


def test_resumes_a_partial_download_with_a_range_request(server, table, tmp_path):
    data = make_tar(FILES)
    table(entry(server, data))
    part = tmp_path / ".downloads" / "toyset.tar.gz.part"
    part.parent.mkdir()
    part.write_bytes(data[:100])
    download_dataset("toy", tmp_path)
    assert [(r["range"], r["status"], r["sent"]) for r in server.requests] == [("bytes=100-", 206, len(data) - 100)]
    assert tree(tmp_path / "toy-folder") == FILES
    assert not part.exists()


def test_a_broken_transfer_keeps_the_part_and_the_next_run_resumes(server, table, tmp_path):
    data = make_tar(FILES)
    table(entry(server, data))
    server.truncate_next = True
    with pytest.raises(DataError, match="run the same command again to resume") as error:
        download_dataset("toy", tmp_path)
    part = tmp_path / ".downloads" / "toyset.tar.gz.part"
    assert part.read_bytes() == data[: len(data) // 2]
    assert str(part) in error.value.message
    assert not (tmp_path / "toy-folder").exists()

    download_dataset("toy", tmp_path)
    assert server.requests[-1]["range"] == f"bytes={len(data) // 2}-"
    assert tree(tmp_path / "toy-folder") == FILES


def test_server_ignoring_range_restarts_from_zero(server, table, tmp_path, capsys):
    data = make_tar(FILES)
    table(entry(server, data))
    server.ignore_range = True
    part = tmp_path / ".downloads" / "toyset.tar.gz.part"
    part.parent.mkdir()
    part.write_bytes(b"x" * 100)  # not the archive's first bytes: appending would fail the checksum
    download_dataset("toy", tmp_path)
    assert [(r["range"], r["status"]) for r in server.requests] == [("bytes=100-", 200)]
    assert "ignored the resume request" in capsys.readouterr().out
    assert tree(tmp_path / "toy-folder") == FILES


def test_checksum_mismatch_keeps_bad_file_and_creates_no_folder(server, table, tmp_path):
    data = make_tar(FILES)
    table(entry(server, data, checksum="sha256:" + "0" * 64))
    with pytest.raises(DataError) as error:
        download_dataset("toy", tmp_path)
    message = error.value.message
    assert "does not match its checksum" in message and "0" * 64 in message
    assert hashlib.sha256(data).hexdigest() in message
    assert "--url" in message and "toyset.tar.gz.bad" in message
    assert not (tmp_path / "toy-folder").exists()
    assert (tmp_path / ".downloads" / "toyset.tar.gz.bad").read_bytes() == data
    assert sorted(os.listdir(tmp_path / ".downloads")) == ["toyset.tar.gz.bad"]
    assert leftovers(tmp_path) == []


def test_an_archive_that_breaks_midway_leaves_no_half_unpacked_folder(server, table, tmp_path):
    noise = os.urandom(40_000)  # incompressible: cutting the file cuts the second member
    data = make_tar({"a.bin": noise[:20_000], "b.bin": noise[20_000:]})
    table(entry(server, data[: len(data) * 3 // 4], checksum=None))
    with pytest.raises(DataError, match=r"not a readable tar\.gz archive") as error:
        download_dataset("toy", tmp_path)
    assert "toyset.tar.gz.bad" in error.value.message
    assert not (tmp_path / "toy-folder").exists()
    assert leftovers(tmp_path) == []
    assert (tmp_path / ".downloads" / "toyset.tar.gz.bad").exists()


def _traversal_tar(kind: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        good = tarfile.TarInfo("toyset/metadata.csv")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"a,b"))
        if kind == "symlink":
            link = tarfile.TarInfo("toyset/escape")
            link.type = tarfile.SYMTYPE
            link.linkname = "../../../outside"
            tar.addfile(link)
        else:
            evil = tarfile.TarInfo("toyset/../../evil.txt" if kind == "dotdot" else "/tmp/robust-evil.txt")
            evil.size = 4
            tar.addfile(evil, io.BytesIO(b"evil"))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "zip"])
def test_members_outside_the_folder_are_refused(server, table, tmp_path, kind):
    if kind == "zip":
        data, fmt = make_zip({"toyset/ok.txt": b"ok", "../evil.txt": b"evil"}), "zip"
    else:
        data, fmt = _traversal_tar(kind), "tar.gz"
    root = tmp_path / "root"
    table(entry(server, data, fmt=fmt))
    with pytest.raises(DataError, match="Refusing to unpack") as error:
        download_dataset("toy", root)
    assert "kept as" in error.value.message
    assert not (root / "toy-folder").exists()
    assert not (tmp_path / "evil.txt").exists() and not (root / "evil.txt").exists()
    assert not Path("/tmp/robust-evil.txt").exists()
    assert (root / ".downloads" / f"toyset.{fmt}.bad").read_bytes() == data
    assert leftovers(root) == []


def test_an_existing_folder_is_skipped(server, table, tmp_path, capsys):
    table(entry(server, make_tar(FILES)))
    (tmp_path / "toy-folder").mkdir()
    (tmp_path / "toy-folder" / "mine.txt").write_text("keep")
    download_dataset("toy", tmp_path)
    assert server.requests == []
    assert tree(tmp_path / "toy-folder") == {"mine.txt": b"keep"}
    assert "already at" in capsys.readouterr().out


def test_force_downloads_again_and_replaces_the_folder(server, table, tmp_path):
    table(entry(server, make_tar(NEW_FILES)))
    (tmp_path / "toy-folder").mkdir()
    (tmp_path / "toy-folder" / "old.txt").write_text("old")
    part = tmp_path / ".downloads" / "toyset.tar.gz.part"
    part.parent.mkdir()
    part.write_bytes(b"stale bytes")
    download_dataset("toy", tmp_path, force=True)
    assert [r["range"] for r in server.requests] == [None]  # the stale .part was not resumed
    assert tree(tmp_path / "toy-folder") == NEW_FILES
    assert leftovers(tmp_path) == []


def test_next_url_is_tried_and_all_failing_is_one_error(server, table, tmp_path):
    data = make_tar(FILES)
    table(entry(server, data, urls=(server.url("/gone.tar.gz"), server.url("/toyset.tar.gz"))))
    download_dataset("toy", tmp_path)
    assert [r["path"] for r in server.requests] == ["/gone.tar.gz", "/toyset.tar.gz"]
    assert tree(tmp_path / "toy-folder") == FILES

    table(entry(server, data, urls=(server.url("/gone.tar.gz"),)))
    with pytest.raises(DataError, match="404") as error:
        download_dataset("toy", tmp_path / "other")
    assert "--url" in error.value.message
    assert not (tmp_path / "other" / "toy-folder").exists()


def test_unknown_and_by_hand_datasets_say_what_to_do():
    with pytest.raises(DataError, match="Downloadable: cifar10, cifar100, waterbirds"):
        download.find_archive("no-such-dataset")
    with pytest.raises(DataError, match="make-cmnist"):
        download.find_archive("cmnist")


# -- the command --------------------------------------------------------------------------------


def invoke(*args: str):
    from robust.cli import cli

    return CliRunner().invoke(cli, ["data", "download", *args], env={"COLUMNS": "200"})


def test_cli_downloads_lists_and_reports_errors_without_traceback(server, table, tmp_path):
    data = make_tar(FILES)
    table(entry(server, data, urls=(server.url("/gone.tar.gz"),)))
    root = str(tmp_path)

    listing = invoke("--data-root", root)
    assert listing.exit_code == 0, listing.output
    assert "toy: toy-folder/, not here; sha256" in listing.output
    assert invoke("--list", "--data-root", root).output == listing.output

    result = invoke("toy", "--data-root", root, "--url", server.url("/toyset.tar.gz"))
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in server.requests] == ["/toyset.tar.gz"]  # --url replaced the table's URL
    assert tree(tmp_path / "toy-folder") == FILES
    assert "toy: toy-folder/, present" in invoke("--data-root", root).output

    again = invoke("toy", "--data-root", root)
    assert again.exit_code == 0 and "already at" in again.output and len(server.requests) == 1

    table(entry(server, data, checksum="md5:" + "1" * 32))
    bad = invoke("toy", "--data-root", root, "--force")
    assert bad.exit_code == 2
    assert "does not match its checksum" in bad.output and "Traceback" not in bad.output
    assert tree(tmp_path / "toy-folder") == FILES  # the old folder is intact

    unknown = invoke("nope", "--data-root", root)
    assert unknown.exit_code == 2 and "cannot be downloaded" in unknown.output and "Traceback" not in unknown.output
