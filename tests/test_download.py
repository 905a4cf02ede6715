"""dexdb.download (``dexdb download``) against a local HTTP server on 127.0.0.1 serving mock PDR1
files: layout, skipping, resuming killed and dropped transfers, verification, path escapes."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from astropy.io import fits
from click.testing import CliRunner

from dexdb.cli import main
from dexdb.constants import PDR1_BASE_URL
from dexdb.download import DownloadError, download, read_url_list, relative_path

CHUNK = 1 << 16


@dataclass
class ServerState:
    root: Path
    ranges: bool = True  # honour Range requests
    pause: float = 0.0  # seconds after each 64 KiB
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> drop the connection after n bytes, once
    requests: list[tuple[str, str | None]] = field(default_factory=list)


def make_handler(state: ServerState):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            requested = self.headers.get("Range")
            state.requests.append((self.path, requested))
            path = state.root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            content = path.read_bytes()
            start = 0
            if requested and state.ranges:
                start = int(re.fullmatch(r"bytes=(\d+)-", requested)[1])
                if start >= len(content):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(content)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            else:
                self.send_response(200)
            body = content[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = state.cut_after.pop(self.path, None)
            for offset in range(0, len(body), CHUNK):
                if cut is not None and offset >= cut:
                    return  # the connection closes short of Content-Length
                try:
                    self.wfile.write(body[offset : offset + CHUNK])
                except (BrokenPipeError, ConnectionResetError):
                    return
                time.sleep(state.pause)

    return Handler


@pytest.fixture(scope="module")
def tree(tiny_pdr1, tmp_path_factory):
    """What the server holds under /pdr1: three cubes, the IFU index, and two damaged cubes."""
    root = tmp_path_factory.mktemp("served")
    release = root / "pdr1"
    cubes = sorted(Path(tiny_pdr1, "datacubes").glob("*/*.fits"))[:3]
    for path in [*cubes, Path(tiny_pdr1, "ifu-index.fits")]:
        target = release / path.relative_to(tiny_pdr1)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    content = cubes[0].read_bytes()
    truncated = release / "datacubes/20990101001/dex_cube_20990101001_001.fits"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(content[: len(content) - 100_000])
    flipped = bytearray(content)
    with fits.open(cubes[0]) as hdul:
        flipped[hdul.fileinfo(1)["datLoc"] + 1_000_000] ^= 0xFF
    corrupt = release / "datacubes/20990101001/dex_cube_20990101001_002.fits"
    corrupt.write_bytes(bytes(flipped))
    good = [p.relative_to(tiny_pdr1).as_posix() for p in [*cubes, Path(tiny_pdr1, "ifu-index.fits")]]
    return {"root": root, "release": release, "good": good,
            "truncated": truncated.relative_to(release).as_posix(), "corrupt": corrupt.relative_to(release).as_posix()}


@pytest.fixture
def server(tree):
    state = ServerState(tree["root"])
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/pdr1"
    yield state
    httpd.shutdown()
    httpd.server_close()


def url_list(tmp_path: Path, base_url: str, relative: list[str], name: str = "urls.txt") -> Path:
    path = tmp_path / name
    path.write_text("# cubes near a position\n\n" + "".join(f"{base_url}/{r}\n" for r in relative))
    return path


def assert_same_files(tree, to_dir: Path, relative: list[str]) -> None:
    for r in relative:
        assert (to_dir / r).read_bytes() == (tree["release"] / r).read_bytes(), r
    assert not list(to_dir.rglob(".*.part"))


# ---------------------------------------------------------------- URL lists and paths


def test_url_list_maps_below_the_target(tmp_path):
    cube = "datacubes/20190405020/dex_cube_20190405020_034.fits"
    path = tmp_path / "urls.txt"
    path.write_text(f"# written by dexdb cubes\n\n  {PDR1_BASE_URL}/{cube}  \n{PDR1_BASE_URL}/{cube}\n"
                    f"{PDR1_BASE_URL}/ifu-index.fits\n")  # fmt: skip
    transfers = read_url_list(path, tmp_path / "pdr1")
    assert [t.target for t in transfers] == [tmp_path / "pdr1" / cube, tmp_path / "pdr1/ifu-index.fits"]
    assert transfers[0].url == f"{PDR1_BASE_URL}/{cube}"
    assert relative_path(f"{PDR1_BASE_URL}/{cube}").as_posix() == cube


@pytest.mark.parametrize(
    "url, message",
    [
        ("datacubes/20190405020/x.fits", "not an absolute http"),
        ("file:///etc/passwd", "not an absolute http"),
        (f"{PDR1_BASE_URL}/../etc/passwd", "'..' is not a plain"),
        (f"{PDR1_BASE_URL}/datacubes/../../x.fits", "'..' is not a plain"),
        (f"{PDR1_BASE_URL}/datacubes/%2e%2e/x.fits", "'%2e%2e' is not a plain"),
        (f"{PDR1_BASE_URL}//etc/passwd", "'' is not a plain"),
        (f"{PDR1_BASE_URL}/datacubes/", "'' is not a plain"),
        (f"{PDR1_BASE_URL}/datacubes/.x.fits.part", "'.x.fits.part' is not a plain"),
        (f"{PDR1_BASE_URL}/a\\b.fits", "is not a plain"),
        (f"{PDR1_BASE_URL}/a.fits?x=1", "query or fragment"),
        (f"{PDR1_BASE_URL}/a.fits#x", "query or fragment"),
        (PDR1_BASE_URL, "is not below"),
        (PDR1_BASE_URL + "x/a.fits", "is not below"),
        ("https://evil.example.org/hetdex/HETDEX/pdr/pdr1/a.fits", "is not below"),
    ],
)
def test_url_list_refuses_escapes(tmp_path, url, message):
    path = tmp_path / "urls.txt"
    path.write_text(f"# header\n{PDR1_BASE_URL}/ifu-index.fits\n{url}\n")
    with pytest.raises(DownloadError, match=re.escape(f"{path}, line 3: ") + ".*" + re.escape(message)):
        read_url_list(path, tmp_path / "pdr1")
    assert not (tmp_path / "pdr1").exists()


def test_symbolic_links_are_refused(server, tree, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    cube = tree["good"][0]
    urls = url_list(tmp_path, server.base_url, [cube])
    linked_dir = tmp_path / "a"
    linked_dir.mkdir()
    (linked_dir / "datacubes").symlink_to(outside, target_is_directory=True)
    linked_file = tmp_path / "b"
    (linked_file / cube).parent.mkdir(parents=True)
    (outside / "victim").write_text("keep")
    (linked_file / cube).symlink_to(outside / "victim")
    linked_part = tmp_path / "c"
    (linked_part / cube).parent.mkdir(parents=True)
    (linked_part / cube).with_name(f".{Path(cube).name}.part").symlink_to(outside / "victim")
    for to_dir in (linked_dir, linked_file, linked_part):
        with pytest.raises(DownloadError, match="symbolic link"):
            download(urls, to_dir, base_url=server.base_url, progress=False, retries=0)
    assert [p.name for p in outside.iterdir()] == ["victim"] and (outside / "victim").read_text() == "keep"
    assert server.requests == []


# ---------------------------------------------------------------- transfers


def test_download_then_skip(server, tree, tmp_path):
    to_dir = tmp_path / "pdr1"
    urls = url_list(tmp_path, server.base_url, tree["good"])
    report = download(urls, to_dir, workers=2, base_url=server.base_url, progress=False)
    assert (report.downloaded, report.skipped) == (len(tree["good"]), 0)
    assert report.bytes == sum((tree["release"] / r).stat().st_size for r in tree["good"])
    assert_same_files(tree, to_dir, tree["good"])
    assert all(r is None for _, r in server.requests)
    server.requests.clear()
    result = CliRunner().invoke(main, ["download", str(urls), "--to", str(to_dir), "--base-url", server.base_url,
                                       "--no-progress"])  # fmt: skip
    assert result.exit_code == 0 and f"{len(tree['good'])} already there" in result.output
    assert server.requests == []  # complete files cost no request


def test_resume_after_killed_process(server, tree, tmp_path):
    to_dir = tmp_path / "pdr1"
    cube = tree["good"][1]
    urls = url_list(tmp_path, server.base_url, [cube])
    part = (to_dir / cube).with_name(f".{Path(cube).name}.part")
    server.pause = 0.01  # ~6 MB/s
    command = [sys.executable, "-m", "dexdb.cli", "download", str(urls), "--to", str(to_dir),
               "--base-url", server.base_url, "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while (not part.exists() or part.stat().st_size < 2_000_000) and time.monotonic() < deadline:
            assert process.poll() is None, "the download ended before it could be killed"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert not (to_dir / cube).exists()  # nothing half-written under the final name
    kept = part.stat().st_size
    assert 2_000_000 <= kept < (tree["release"] / cube).stat().st_size
    server.pause, server.requests = 0.0, []
    report = download(urls, to_dir, base_url=server.base_url, progress=False)
    assert server.requests == [(f"/pdr1/{cube}", f"bytes={kept}-")]
    assert report.bytes == (tree["release"] / cube).stat().st_size - kept
    assert_same_files(tree, to_dir, [cube])


def test_dropped_connection_resumes_with_range(server, tree, tmp_path):
    cube = tree["good"][2]
    server.cut_after[f"/pdr1/{cube}"] = 3 * CHUNK * 16
    report = download(url_list(tmp_path, server.base_url, [cube]), tmp_path / "pdr1", base_url=server.base_url,
                      retries=1, progress=False)  # fmt: skip
    assert server.requests == [(f"/pdr1/{cube}", None), (f"/pdr1/{cube}", f"bytes={3 * CHUNK * 16}-")]
    assert report.bytes == (tree["release"] / cube).stat().st_size
    assert_same_files(tree, tmp_path / "pdr1", [cube])


def test_server_without_ranges_and_stale_parts(server, tree, tmp_path):
    """A server that ignores Range sends everything again; a part longer than the file restarts."""
    to_dir = tmp_path / "pdr1"
    first, second = tree["good"][0], tree["good"][1]
    for cube, content in ((first, (tree["release"] / first).read_bytes()[:1_000_000]), (second, b"x" * 30_000_000)):
        (to_dir / cube).parent.mkdir(parents=True, exist_ok=True)
        (to_dir / cube).with_name(f".{Path(cube).name}.part").write_bytes(content)
    server.ranges = False
    download(url_list(tmp_path, server.base_url, [first]), to_dir, base_url=server.base_url, progress=False)
    server.ranges = True
    download(url_list(tmp_path, server.base_url, [second], "second.txt"), to_dir, base_url=server.base_url,
             progress=False)  # fmt: skip
    assert server.requests == [(f"/pdr1/{first}", "bytes=1000000-"), (f"/pdr1/{second}", "bytes=30000000-"),
                               (f"/pdr1/{second}", None)]  # fmt: skip
    assert_same_files(tree, to_dir, [first, second])


def test_damaged_file_in_place_is_fetched_again(server, tree, tmp_path):
    to_dir = tmp_path / "pdr1"
    cube = tree["good"][0]
    (to_dir / cube).parent.mkdir(parents=True)
    (to_dir / cube).write_bytes((tree["release"] / cube).read_bytes()[:5_000_000])
    report = download(url_list(tmp_path, server.base_url, [cube]), to_dir, base_url=server.base_url, progress=False)
    assert (report.downloaded, report.skipped) == (1, 0)
    assert_same_files(tree, to_dir, [cube])


def test_truncated_corrupt_and_missing_files(server, tree, tmp_path):
    to_dir = tmp_path / "pdr1"
    missing = "datacubes/20990101001/dex_cube_20990101001_003.fits"
    relative = [tree["good"][0], tree["truncated"], tree["corrupt"], missing]
    urls = url_list(tmp_path, server.base_url, relative)
    with pytest.raises(DownloadError) as caught:
        download(urls, to_dir, workers=3, base_url=server.base_url, retries=0, progress=False)
    message = str(caught.value)
    assert message.startswith("3 of 4 files failed")
    assert re.search(re.escape(str(to_dir / tree["truncated"])) + ".*truncated", message)
    checksum = "Checksum verification failed for HDU .'DATA'"
    assert re.search(re.escape(str(to_dir / tree["corrupt"])) + ".*" + checksum, message)
    assert f"{server.base_url}/{missing}: HTTP 404" in message
    assert_same_files(tree, to_dir, [tree["good"][0]])  # the good file is in place, no part is left
    for bad in relative[1:]:
        assert not (to_dir / bad).exists()
    result = CliRunner().invoke(main, ["download", str(urls), "--to", str(to_dir), "--base-url", server.base_url,
                                       "--retries", "0", "--no-progress"])  # fmt: skip
    assert result.exit_code == 1 and str(to_dir / tree["corrupt"]) in result.output
