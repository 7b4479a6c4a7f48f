"""download_data.py against a local HTTP server on 127.0.0.1 serving archives built here."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import download_data  # noqa: E402
from lensing.config import CLASSES  # noqa: E402

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
                data = server.files.get(self.path)
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
    return download_data.main(
        ["--url", url, "--out", str(out), "--quiet", "--retries", "0", *extra]
    )


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
    assert download_data.validate_layout(root) == expected
    assert sorted(p.name for p in root.iterdir()) == ["train", "val"]
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
    assert download_data.validate_layout(root)["test"] == dict.fromkeys(CLASSES, 1)
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
    assert download_data.validate_layout(out / "dataset")["train"] == dict.fromkeys(CLASSES, 4)
    assert sorted(p.name for p in out.iterdir()) == ["dataset"]


def test_force_with_a_bad_archive_keeps_the_old_set(server, tmp_path):
    out = tmp_path / "data"
    assert run_main(server.serve("/good.zip", build_zip()), out) == 0
    bad = server.serve("/bad.zip", build_zip(classes=("no", "sphere")))
    assert run_main(bad, out, "--force") == download_data.LayoutError.exit_code
    assert download_data.validate_layout(out / "dataset")["train"] == dict.fromkeys(CLASSES, 3)
    assert not [p for p in out.iterdir() if p.name.startswith(".dataset.")]


@pytest.mark.parametrize(
    ("archive", "error", "message"),
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
def test_bad_archives_leave_nothing_behind(server, tmp_path, capsys, archive, error, message):
    out = tmp_path / "data"
    url = server.serve("/dataset.zip", archive())
    code = run_main(url, out)
    assert code == getattr(download_data, error).exit_code
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
    monkeypatch.setattr(download_data, "_extract_files", lambda *a: extracted.append(a))
    with pytest.raises(download_data.UnsafeArchiveError, match="evil.npy"):
        download_data.safe_extract(zip_path, tmp_path / "out" / "dataset", progress=False)
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
    with pytest.raises(download_data.BadArchiveError, match="corrupt"):
        download_data.safe_extract(zip_path, tmp_path / "dataset", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.zip"]


def test_checksum(server, tmp_path, capsys):
    data = build_zip()
    good = hashlib.sha256(data).hexdigest()
    url = server.serve("/dataset.zip", data)
    out = tmp_path / "data"
    assert run_main(url, out, "--sha256", "0" * 64) == download_data.ChecksumError.exit_code
    assert "sha256" in capsys.readouterr().err
    assert_clean(out)
    assert run_main(url, out, "--sha256", good.upper()) == 0
    assert (out / "dataset" / "val" / "sphere").is_dir()
    with pytest.raises(SystemExit) as exc:
        run_main(url, out, "--sha256", "abc")
    assert exc.value.code == 2


def test_unreachable_url(tmp_path, capsys):
    out = tmp_path / "data"
    assert run_main(closed_port_url(), out) == download_data.UnreachableError.exit_code
    err = capsys.readouterr().err
    assert "could not reach" in err and "lensing simulate" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_http_error(server, tmp_path, capsys):
    out = tmp_path / "data"
    assert run_main(server.url("/missing.zip"), out) == download_data.DownloadFailedError.exit_code
    assert "HTTP 404" in capsys.readouterr().err
    assert_clean(out)


def test_existing_zip_is_used_without_network(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "dataset.zip").write_bytes(build_zip())
    assert run_main(closed_port_url(), out) == 0
    assert download_data.validate_layout(out / "dataset")["val"] == dict.fromkeys(CLASSES, 2)


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
    assert download_data.validate_layout(out / "dataset")["train"] == dict.fromkeys(CLASSES, 3)
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
        download_data.UnreachableError.exit_code,
        download_data.DownloadFailedError.exit_code,
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
    assert download_data.validate_layout(out / "dataset")["val"] == dict.fromkeys(CLASSES, 2)
    assert (out / "dataset" / "filler.bin").read_bytes() == filler
    assert sorted(p.name for p in out.iterdir()) == ["dataset"]


def test_existing_invalid_dataset_needs_force(server, tmp_path, capsys):
    out = tmp_path / "data"
    (out / "dataset" / "train").mkdir(parents=True)
    url = server.serve("/dataset.zip", build_zip())
    assert run_main(url, out) == download_data.ExistingDataError.exit_code
    assert "--force" in capsys.readouterr().err
    assert server.requests == []
    assert run_main(url, out, "--force") == 0
    assert download_data.validate_layout(out / "dataset")["val"] == dict.fromkeys(CLASSES, 2)


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
        download_data.main(["--out", str(tmp_path / "data"), *args])
    assert exc.value.code == 2
    assert "expected" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_drive_ids_and_urls_are_accepted():
    fid = download_data.DRIVE_FILE_ID
    assert download_data._normalize_url(fid) == download_data.DEFAULT_URL
    url = f"https://drive.google.com/file/d/{fid}/view?usp=sharing"
    assert download_data._normalize_url(url) == url  # gdown parses the id out of it


def test_validate_layout_errors(tmp_path):
    with pytest.raises(download_data.LayoutError, match="not a folder"):
        download_data.validate_layout(tmp_path / "nope")
    for name in CLASSES:
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "val" / name).mkdir(parents=True)
        (tmp_path / "val" / name / "1.npy").write_bytes(npy_bytes(0.0))
    with pytest.raises(download_data.LayoutError, match="train/no/"):
        download_data.validate_layout(tmp_path)


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
