"""The download command (lensing.cli.download, lensing.data.download, download_data.py)
against a local HTTP server serving built archives."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from lensing.cli import download as command
from lensing.core.constants import CLASSES
from lensing.data import archive, download

REPO = Path(__file__).resolve().parents[2]

PER_CLASS = {"train": 3, "val": 2}


def npy_bytes(value: float) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.full((1, 150, 150), value), allow_pickle=False)
    return buf.getvalue()


def build_zip(
    prefix: str = "dataset/",
    per_class: dict[str, int] = PER_CLASS,
    classes: tuple[str, ...] = CLASSES,
    extra: dict[str, bytes] | None = None,
    symlink: str | None = None,
) -> bytes:
    """A tiny archive: per_class[split] .npy files in each class folder, under prefix."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for split, n in per_class.items():
            for label, name in enumerate(classes):
                for i in range(1, n + 1):
                    zf.writestr(f"{prefix}{split}/{name}/{i}.npy", npy_bytes(label / 2))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3  # unix, so external_attr carries the file type
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


class Server:
    """Serves {path: bytes}; honours ``Range: bytes=N-`` unless ranges=False."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.cut_after: int | None = None  # send only this many bytes, then hang up
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path.split("?")[0])
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and server.ranges:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut_after is not None:
                    body = body[: server.cut_after]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval keeps shutdown() (one per test) quick.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/dataset.zip"


def run_main(url: str, out: Path, *extra: str) -> int:
    return command.main(["--url", url, "--out", str(out), "--quiet", "--retries", "0", *extra])


def assert_clean(out: Path) -> None:
    """What a failed run must not leave: a data set, temporary folders, a reusable zip."""
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert "dataset" not in names and "dataset.zip" not in names
    assert not [n for n in names if n.startswith(".dataset.")], names


@pytest.mark.parametrize("prefix", ["dataset/", "", "DeepLense Common Test I/"])
def test_download_extracts_validates_and_counts(server, tmp_path, capsys, prefix):
    url = server.serve("/dataset.zip", build_zip(prefix=prefix))
    out = tmp_path / "data"
    assert run_main(url, out) == 0
    root = out / "dataset"
    expected = {split: dict.fromkeys(CLASSES, n) for split, n in PER_CLASS.items()}
    assert archive.validate_layout(root) == expected
    assert sorted(p.name for p in root.iterdir()) == [download.SOURCE_MARKER, "train", "val"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert root.stat().st_mode & 0o777 == 0o777 & ~umask  # not a temp folder's 0700
    np.testing.assert_array_equal(np.load(root / "val" / "vort" / "2.npy"), np.ones((1, 150, 150)))
    assert sorted(p.name for p in out.iterdir()) == ["dataset"]  # zip removed, no temp folders
    printed = capsys.readouterr().out
    assert "is ready" in printed and "train" in printed and "no test/ split" in printed


def test_noise_is_skipped_and_test_split_kept(server, tmp_path):
    noise = {
        "__MACOSX/dataset/train/no/._1.npy": b"resource fork",
        "__MACOSX/dataset/train/no/Icon.npy": b"finder metadata",
        "dataset/.DS_Store": b"finder",
        "dataset/train/no/._2.npy": b"appledouble",
    }
    data = build_zip(per_class={"train": 2, "val": 1, "test": 1}, extra=noise)
    url = server.serve("/d.zip", data)
    out = tmp_path / "data"
    assert run_main(url, out, "--keep-zip") == 0
    root = out / "dataset"
    assert archive.validate_layout(root)["test"] == dict.fromkeys(CLASSES, 1)
    assert not (out / "__MACOSX").exists() and not (root / ".DS_Store").exists()
    assert sorted(p.name for p in (root / "train" / "no").iterdir()) == ["1.npy", "2.npy"]
    assert (out / "dataset.zip").read_bytes() == data  # --keep-zip


def test_second_run_is_a_no_op_and_force_replaces(server, tmp_path, capsys):
    out = tmp_path / "data"
    url = server.serve("/dataset.zip", build_zip())
    assert run_main(url, out) == 0
    marker = out / "dataset" / "train" / "no" / "1.npy"
    before = marker.stat().st_mtime_ns
    n_requests = len(server.requests)
    capsys.readouterr()

    assert run_main(url, out) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert len(server.requests) == n_requests  # not even a request
    assert marker.stat().st_mtime_ns == before

    server.serve("/v2.zip", build_zip(per_class={"train": 4, "val": 1}))
    assert run_main(server.url("/v2.zip"), out, "--force") == 0
    assert archive.validate_layout(out / "dataset")["train"] == dict.fromkeys(CLASSES, 4)
    assert sorted(p.name for p in out.iterdir()) == ["dataset"]


def test_force_with_a_bad_archive_keeps_the_old_set(server, tmp_path):
    out = tmp_path / "data"
    assert run_main(server.serve("/good.zip", build_zip()), out) == 0
    bad = server.serve("/bad.zip", build_zip(classes=("no", "sphere")))
    assert run_main(bad, out, "--force") == command.EXIT_LAYOUT
    assert archive.validate_layout(out / "dataset")["train"] == dict.fromkeys(CLASSES, 3)
    assert not [p for p in out.iterdir() if p.name.startswith(".dataset.")]


CODES = {"UnsafeArchiveError": 7, "BadArchiveError": 6, "LayoutError": 8}


@pytest.mark.parametrize(
    ("make_archive", "error", "message"),
    [
        (lambda: build_zip(extra={"dataset/../../evil.npy": b"x"}), "UnsafeArchiveError", ".."),
        (lambda: build_zip(extra={"/tmp/evil.npy": b"x"}), "UnsafeArchiveError", "absolute"),
        (lambda: build_zip(symlink="dataset/train/no/link.npy"), "UnsafeArchiveError", "link"),
        (lambda: build_zip()[:-200], "BadArchiveError", "truncated or corrupt"),
        (lambda: b"<!DOCTYPE html><html>quota exceeded</html>", "BadArchiveError", "HTML"),
        (lambda: build_zip(classes=("no", "vort")), "LayoutError", "sphere"),
        (lambda: build_zip(per_class={"train": 2}), "LayoutError", "val/"),
    ],
    ids=["zip-slip", "absolute", "symlink", "truncated", "html", "missing-class", "no-val"],
)
def test_bad_archives_leave_nothing_behind(server, tmp_path, capsys, make_archive, error, message):
    out = tmp_path / "data"
    url = server.serve("/dataset.zip", make_archive())
    code = run_main(url, out)
    assert code == command.exit_code(getattr(archive, error)("")) == CODES[error]
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert_clean(out)
    assert not (tmp_path / "evil.npy").exists()
    assert (out / "dataset.zip.rejected").exists()  # not reused by the next run


def test_unsafe_entry_refused_before_anything_is_written(tmp_path, monkeypatch):
    zip_path = tmp_path / "a.zip"
    # The bad entry comes last, so an extract-as-you-go check would already have written files.
    zip_path.write_bytes(build_zip(extra={"dataset/../../../evil.npy": b"x"}))
    extracted = []
    monkeypatch.setattr(archive, "_extract_files", lambda *a: extracted.append(a))
    with pytest.raises(archive.UnsafeArchiveError, match="evil.npy"):
        archive.safe_extract(zip_path, tmp_path / "out" / "dataset", progress=False)
    assert extracted == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.zip", "out"]


def test_crc_error_while_reading(tmp_path):
    data = bytearray(build_zip())
    # Flip a byte inside the first member's compressed data: the central directory stays valid,
    # so only reading the member (CRC or inflate) can find the damage.
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.infolist()[0]
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 5
    data[offset] ^= 0xFF
    zip_path = tmp_path / "dataset.zip"
    zip_path.write_bytes(bytes(data))
    with pytest.raises(archive.BadArchiveError, match="corrupt"):
        archive.safe_extract(zip_path, tmp_path / "dataset", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.zip"]


def test_checksum(server, tmp_path, capsys):
    data = build_zip()
    good = hashlib.sha256(data).hexdigest()
    url = server.serve("/dataset.zip", data)
    out = tmp_path / "data"
    assert run_main(url, out, "--sha256", "0" * 64) == command.EXIT_CHECKSUM
    assert "sha256" in capsys.readouterr().err
    assert_clean(out)
    assert run_main(url, out, "--sha256", good.upper()) == 0
    assert (out / "dataset" / "val" / "sphere").is_dir()
    with pytest.raises(SystemExit) as exc:
        run_main(url, out, "--sha256", "abc")
    assert exc.value.code == 2


def test_unreachable_url(tmp_path, capsys):
    out = tmp_path / "data"
    assert run_main(closed_port_url(), out) == command.EXIT_NO_NETWORK
    err = capsys.readouterr().err
    assert "could not reach" in err and "lensing simulate" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_http_error(server, tmp_path, capsys):
    out = tmp_path / "data"
    assert run_main(server.url("/missing.zip"), out) == command.EXIT_DOWNLOAD_FAILED
    assert "HTTP 404" in capsys.readouterr().err
    assert_clean(out)


def test_existing_zip_is_used_without_network(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "dataset.zip").write_bytes(build_zip())
    assert run_main(closed_port_url(), out) == 0
    assert archive.validate_layout(out / "dataset")["val"] == dict.fromkeys(CLASSES, 2)


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "server-without-ranges"])
def test_partial_download_resumes(server, tmp_path, ranges):
    data = build_zip()
    url = server.serve("/dataset.zip", data)
    server.ranges = ranges
    out = tmp_path / "data"
    out.mkdir()
    part = out / "dataset.zipABCDEFGH.part"  # gdown's partial-file naming
    part.write_bytes(data[:1000])
    assert run_main(url, out) == 0
    assert archive.validate_layout(out / "dataset")["train"] == dict.fromkeys(CLASSES, 3)
    assert not part.exists()
    if ranges:
        assert server.requests[-1][1] == "bytes=1000-"


def test_broken_off_download_is_kept_and_resumed(server, tmp_path, capsys):
    # Incompressible filler makes the archive span several of gdown's 512 KiB chunks.
    filler = np.random.default_rng(0).bytes(1_500_000)
    data = build_zip(extra={"dataset/filler.bin": filler})
    url = server.serve("/dataset.zip", data)
    out = tmp_path / "data"
    server.cut_after = 1_200_000
    code = run_main(url, out)
    assert code in (
        command.EXIT_NO_NETWORK,
        command.EXIT_DOWNLOAD_FAILED,
    )
    err = capsys.readouterr().err
    assert "the next run resumes it" in err and "Traceback" not in err
    (part,) = out.glob("dataset.zip*.part")
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    assert_clean(out)

    server.cut_after = None
    assert run_main(url, out) == 0
    assert server.requests[-1][1] == f"bytes={kept}-"
    assert archive.validate_layout(out / "dataset")["val"] == dict.fromkeys(CLASSES, 2)
    assert (out / "dataset" / "filler.bin").read_bytes() == filler
    assert sorted(p.name for p in out.iterdir()) == ["dataset"]


def test_existing_invalid_dataset_needs_force(server, tmp_path, capsys):
    out = tmp_path / "data"
    (out / "dataset" / "train").mkdir(parents=True)
    url = server.serve("/dataset.zip", build_zip())
    assert run_main(url, out) == command.EXIT_EXISTING
    assert "--force" in capsys.readouterr().err
    assert server.requests == []
    assert run_main(url, out, "--force") == 0
    assert archive.validate_layout(out / "dataset")["val"] == dict.fromkeys(CLASSES, 2)


def test_interrupted_force_is_recovered(server, tmp_path):
    # A kill between moving the old set aside and moving the new one in leaves only .dataset.old-*
    out = tmp_path / "data"
    assert run_main(server.serve("/dataset.zip", build_zip()), out) == 0
    (out / "dataset").rename(out / ".dataset.old-1-2")
    (out / ".dataset.extract-3-4" / "train").mkdir(parents=True)
    assert run_main(closed_port_url(), out) == 0  # restored, so nothing to download
    assert sorted(p.name for p in out.iterdir()) == ["dataset"]


@pytest.mark.parametrize(
    "args",
    [["--url", "ftp://example.org/d.zip"], ["--url", "data.zip"], ["--retries", "-1"]]
    + [["--timeout", "0"], ["--sha256", "xyz"]],
)
def test_bad_options_exit_2(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exc:
        command.main(["--out", str(tmp_path / "data"), *args])
    assert exc.value.code == 2
    assert "expected" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_exit_codes_are_the_documented_ones():
    # Scripts rely on these numbers: 1 and 2 shared with every command, 3-9 download's own.
    errors = {
        download.UnreachableError: 3,
        download.DownloadFailedError: 4,
        archive.ChecksumError: 5,
        archive.BadArchiveError: 6,
        archive.UnsafeArchiveError: 7,
        archive.LayoutError: 8,
        download.ExistingDataError: 9,
        archive.DownloadDataError: 1,
    }
    assert {kind: command.exit_code(kind("x")) for kind in errors} == errors
    expected = {"3 no network", "7 unsafe archive", "9 OUT/dataset exists", "130 interrupted"}
    assert all(text in command.EPILOG for text in expected)
    for code in range(3, 10):
        assert f"- {code} ``EXIT_" in command.__doc__


def test_download_command_of_the_package(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lensing", "download", "--out", str(tmp_path), "--timeout", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "python -m lensing download: error:" in proc.stderr
    assert "expected seconds > 0" in proc.stderr


def test_drive_ids_and_urls_are_accepted():
    fid = download.DRIVE_FILE_ID
    assert download.normalize_url(fid) == download.DEFAULT_URL
    url = f"https://drive.google.com/file/d/{fid}/view?usp=sharing"
    assert download.normalize_url(url) == url  # gdown parses the id out of it


def test_validate_layout_errors(tmp_path):
    with pytest.raises(archive.LayoutError, match="not a folder"):
        archive.validate_layout(tmp_path / "nope")
    for name in CLASSES:
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "val" / name).mkdir(parents=True)
        (tmp_path / "val" / name / "1.npy").write_bytes(npy_bytes(0.0))
    with pytest.raises(archive.LayoutError, match="train/no/"):
        archive.validate_layout(tmp_path)


def test_cli_without_network_exits_3(tmp_path):
    out = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, str(REPO / "download_data.py"), "--url", closed_port_url()]
        + ["--out", str(out), "--retries", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stderr
    assert "could not reach" in proc.stderr and "make simulate" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- provenance marker


def test_marker_records_the_archive_and_appears_with_the_data(server, tmp_path):
    data = build_zip()
    port = server.httpd.server_address[1]
    server.serve("/dataset.zip", data)
    # Credentials in the URL (basic auth, a signed-URL token) must not reach the marker.
    url = f"http://reader:hunter2@127.0.0.1:{port}/dataset.zip?X-Amz-Signature=ab12&mirror=eu"
    out = tmp_path / "data"
    before = datetime.now(timezone.utc).replace(microsecond=0)
    assert run_main(url, out) == 0
    root = out / "dataset"
    marker = download.read_source_marker(root)
    assert marker is not None
    assert marker["source"] == "deeplense-test-i"
    assert marker["archive_sha256"] == hashlib.sha256(data).hexdigest()
    assert marker["url"] == f"http://127.0.0.1:{port}/dataset.zip?mirror=eu"
    assert "hunter2" not in (root / download.SOURCE_MARKER).read_text()
    data_mode = (root / "val" / "no" / "1.npy").stat().st_mode & 0o777
    assert (root / download.SOURCE_MARKER).stat().st_mode & 0o777 == data_mode  # not 0600
    unpacked = datetime.fromisoformat(marker["unpacked_at"])
    assert before <= unpacked <= datetime.now(timezone.utc)
    # At the top of the set only, and the set still validates with it there.
    assert list(root.rglob(download.SOURCE_MARKER)) == [root / download.SOURCE_MARKER]
    assert archive.validate_layout(root)["val"] == dict.fromkeys(CLASSES, 2)


def test_force_writes_a_new_marker_and_a_no_op_keeps_it(server, tmp_path, capsys):
    out = tmp_path / "data"
    first, second = build_zip(), build_zip(per_class={"train": 4, "val": 1})
    assert run_main(server.serve("/a.zip", first), out) == 0
    marker_path = out / "dataset" / download.SOURCE_MARKER
    written = marker_path.read_bytes()
    capsys.readouterr()
    assert run_main(server.serve("/a.zip", first), out) == 0  # a valid set with its marker
    assert "nothing to do" in capsys.readouterr().out
    assert marker_path.read_bytes() == written
    assert run_main(server.serve("/b.zip", second), out, "--force") == 0
    marker = download.read_source_marker(out / "dataset")
    assert marker["archive_sha256"] == hashlib.sha256(second).hexdigest()
    assert marker["url"].endswith("/b.zip")


def test_set_without_marker_is_accepted_and_reported(server, tmp_path, capsys):
    out = tmp_path / "data"
    assert run_main(server.serve("/dataset.zip", build_zip()), out) == 0
    (out / "dataset" / download.SOURCE_MARKER).unlink()
    assert download.read_source_marker(out / "dataset") is None
    n_requests = len(server.requests)
    capsys.readouterr()
    assert run_main(server.url("/dataset.zip"), out) == 0
    printed = capsys.readouterr().out
    assert "nothing to do" in printed and "no source.json provenance marker" in printed
    assert len(server.requests) == n_requests
    assert download.read_source_marker(tmp_path / "nowhere") is None


GOOD_MARKER = {
    "source": "deeplense-test-i",
    "archive_sha256": "ab" * 32,
    "url": "https://example.org/dataset.zip",
    "unpacked_at": "2024-01-01T00:00:00+00:00",
}


@pytest.mark.parametrize(
    "content",
    [
        b'{"source": "deeplense-test-i", "archive_sha2',  # cut off mid-write by hand
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        json.dumps({**GOOD_MARKER, "archive_sha256": "not-hex"}).encode(),
        json.dumps({k: v for k, v in GOOD_MARKER.items() if k != "url"}).encode(),
        json.dumps({**GOOD_MARKER, "source": 7}).encode(),
        json.dumps({**GOOD_MARKER, "source": ""}).encode(),
        b"[" * 50_000,  # too deep for the JSON parser
        json.dumps({**GOOD_MARKER, "note": "x" * 70_000}).encode(),  # larger than any marker
        None,  # a folder where the marker should be
    ],
    ids=["truncated", "binary", "list", "bad-sha", "no-url", "int", "empty", "deep", "huge"]
    + ["folder"],
)
def test_corrupt_marker_reads_as_none(tmp_path, content):
    path = tmp_path / download.SOURCE_MARKER
    path.mkdir() if content is None else path.write_bytes(content)
    assert download.read_source_marker(tmp_path) is None
    # The same folder with a good marker reads back, so None above is the content's doing.
    if content is not None:
        path.write_text(json.dumps(GOOD_MARKER))
        assert download.read_source_marker(str(tmp_path)) == GOOD_MARKER


def test_public_url_drops_only_credentials():
    fid = download.DRIVE_FILE_ID
    assert download.public_url(download.DEFAULT_URL) == download.DEFAULT_URL
    assert (
        download.public_url(f"https://u:p@drive.google.com/uc?id={fid}&resourcekey=0-xy#top")
        == f"https://drive.google.com/uc?id={fid}"
    )
    assert download.public_url("http://[::1]:8080/d.zip?token=t&a=%20b") == (
        "http://[::1]:8080/d.zip?a=%20b"
    )


def test_finish_runs_in_the_staging_folder_before_the_rename(tmp_path):
    zip_path = tmp_path / "dataset.zip"
    zip_path.write_bytes(build_zip())
    dest = tmp_path / "out" / "dataset"
    seen = []

    def finish(root: Path) -> None:
        seen.append((root.parent == dest.parent, root != dest, dest.exists()))
        seen.append(sorted(p.name for p in root.iterdir()))

    archive.safe_extract(zip_path, dest, progress=False, finish=finish)
    assert seen == [(True, True, False), ["train", "val"]]

    def fail(root: Path) -> None:
        raise OSError("disk full while writing the marker")

    with pytest.raises(OSError, match="disk full"):
        archive.safe_extract(zip_path, tmp_path / "out" / "again", progress=False, finish=fail)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dataset"]


# --- the thin entry point


def test_entry_script_is_thin():
    source = (REPO / "download_data.py").read_text()
    tree = ast.parse(source)
    assert len(source.splitlines()) <= 25
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert [(n.module, [a.name for a in n.names]) for n in imports] == [
        ("pathlib", ["Path"]),
        ("lensing.cli.download", ["main"]),
    ]


def test_entry_script_help_exits_0(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "download_data.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--sha256" in proc.stdout and "Exit codes" in proc.stdout


def test_entry_script_uses_its_own_checkout_first(tmp_path):
    # A copy of the checkout whose parser says so: under -I Python adds neither the script's
    # folder nor the working folder to sys.path, so only the script's own insert finds it,
    # ahead of the installed (editable) package.
    copy = tmp_path / "checkout"
    shutil.copytree(
        REPO / "lensing", copy / "lensing", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "download_data.py", copy)
    module = copy / "lensing" / "cli" / "download.py"
    text = module.read_text()
    assert "Download, verify and unpack" in text
    module.write_text(text.replace("Download, verify and unpack", "COPIED CHECKOUT: download"))
    proc = subprocess.run(
        [sys.executable, "-I", str(copy / "download_data.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "COPIED CHECKOUT" in proc.stdout
