"""Download the PDR1 files of a URL list into the release layout, resumably, with parallel workers.

    >>> from dexdb.download import download
    >>> report = download("urls.txt", "pdr1", workers=4)

The list (as ``dexdb cubes ... --urls urls.txt`` writes it) holds one absolute URL per line; blank
lines and lines starting with ``#`` are skipped. A URL below the base URL (the public release, by
default) lands at the same relative path below the target directory:
``<base>/datacubes/<shotid>/dex_cube_<shotid>_<ifuslot>.fits`` -> ``PDR1_DIR/datacubes/...``.

Nothing can be written outside the target directory: each path segment must be a plain name
(letters, digits, ``._-``, not starting with a dot), so ``..``, absolute paths, empty segments and
percent-escapes are refused, as are symbolic links anywhere between the target directory and a file.

A file is fetched into ``.<name>.part`` next to its final place; an interrupted transfer resumes from
the bytes already there (HTTP Range, or from the start when the server ignores it). A FITS file is
published by rename only after it opens with valid checksums and its HDUs fill it exactly (a cube
also with its DATA/ERROR/MASK images); a file already in place that passes the same structural check
is skipped without a request.
"""

from __future__ import annotations

import http.client
import os
import re
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from tqdm import tqdm

from dexdb.constants import PDR1_BASE_URL
from dexdb.cube import CubeError, open_cube

_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_CUBE_NAME = re.compile(r"dex_cube_\d+_\d{3}\.fits")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
CHUNK_BYTES = 1 << 20
#: astropy reports bad checksums as warnings, and the warnings filters are global: transfer threads
#: verify one file at a time, so that no file's warnings are recorded against another.
_VERIFYING = threading.Lock()


class DownloadError(Exception):
    """A bad URL list or failed transfers; the message names the file, line or URL."""


@dataclass(frozen=True)
class Transfer:
    url: str
    target: Path


@dataclass(frozen=True)
class DownloadReport:
    downloaded: int
    skipped: int  # already complete
    bytes: int  # transferred in this run


def read_url_list(path: str | os.PathLike, to_dir: str | os.PathLike, base_url: str = PDR1_BASE_URL) -> list[Transfer]:
    """The transfers of a URL list, each URL checked and mapped below ``to_dir``; duplicates once.

    >>> [t.target.as_posix() for t in read_url_list("urls.txt", "pdr1")]
    ['pdr1/datacubes/20190405020/dex_cube_20190405020_034.fits']
    """
    path, to_dir = Path(path), Path(to_dir)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DownloadError(f"{path}: cannot read the URL list ({exc})") from exc
    transfers: dict[str, Transfer] = {}
    for number, line in enumerate(lines, 1):
        url = line.strip()
        if not url or url.startswith("#"):
            continue
        try:
            relative = relative_path(url, base_url)
        except ValueError as exc:
            raise DownloadError(f"{path}, line {number}: {exc}") from exc
        transfers.setdefault(url, Transfer(url, to_dir.joinpath(*relative.parts)))
    return list(transfers.values())


def relative_path(url: str, base_url: str = PDR1_BASE_URL) -> PurePosixPath:
    """The path of ``url`` below ``base_url``, made only of plain names; ValueError otherwise.

    >>> relative_path(PDR1_BASE_URL + "/datacubes/20190405020/dex_cube_20190405020_034.fits")
    PurePosixPath('datacubes/20190405020/dex_cube_20190405020_034.fits')
    """
    parts, base = urlsplit(url), urlsplit(base_url.rstrip("/"))
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError(f"URL with a query or fragment: {url!r}")
    prefix = base.path + "/"
    if (parts.scheme, parts.netloc.lower()) != (base.scheme, base.netloc.lower()) or not parts.path.startswith(prefix):
        raise ValueError(f"{url!r} is not below {base_url}")
    segments = parts.path[len(prefix):].split("/")
    bad = [segment for segment in segments if not _SEGMENT.fullmatch(segment)]
    if bad:
        raise ValueError(f"{url!r}: path segment {bad[0]!r} is not a plain file or directory name")
    return PurePosixPath(*segments)


def download(url_file: str | os.PathLike, to_dir: str | os.PathLike, *, workers: int = 4,
             base_url: str = PDR1_BASE_URL, retries: int = 3, timeout: float = 60.0, progress: bool = True,
             log: Callable[[str], None] = lambda _: None) -> DownloadReport:
    """Fetch every file of ``url_file`` missing under ``to_dir``; DownloadError lists the failures
    after the other files are done."""
    to_dir = Path(to_dir)
    transfers = read_url_list(url_file, to_dir, base_url)
    to_dir.mkdir(parents=True, exist_ok=True)
    counts = {"downloaded": 0, "skipped": 0, "bytes": 0}
    lock = threading.Lock()
    failures: list[str] = []
    with tqdm(total=len(transfers), unit="file", disable=not progress) as bar:

        def fetch(transfer: Transfer) -> None:
            try:
                sent = _fetch(transfer, to_dir, retries, timeout)
            except DownloadError as exc:
                with lock:
                    failures.append(str(exc))
            else:
                with lock:
                    counts["skipped" if sent is None else "downloaded"] += 1
                    counts["bytes"] += sent or 0
            bar.update()

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in as_completed([pool.submit(fetch, transfer) for transfer in transfers]):
                future.result()
    log(f"{counts['downloaded']} downloaded ({counts['bytes'] / 1e6:.1f} MB), {counts['skipped']} already there, "
        f"{len(failures)} failed")
    if failures:
        raise DownloadError(f"{len(failures)} of {len(transfers)} files failed:\n" + "\n".join(sorted(failures)))
    return DownloadReport(counts["downloaded"], counts["skipped"], counts["bytes"])


# ---------------------------------------------------------------------------------------------------
# One file


def _fetch(transfer: Transfer, to_dir: Path, retries: int, timeout: float) -> int | None:
    """Bytes transferred, or None when the file was already complete."""
    target = transfer.target
    try:
        _make_parents(to_dir, target)
        if target.is_file() and not target.is_symlink():
            try:
                verify_file(target, checksum=False)
                return None
            except CubeError:
                pass  # incomplete or damaged: fetched again
        part = target.with_name(f".{target.name}.part")
        sent = _transfer(transfer.url, part, retries, timeout)
        try:
            verify_file(part, checksum=True, name=target)
        except CubeError:
            part.unlink()
            raise
        if target.is_symlink():
            raise DownloadError(f"{target}: is a symbolic link, refusing to write through it")
        os.replace(part, target)
        return sent
    except CubeError as exc:
        raise DownloadError(f"{transfer.url}: {exc}") from exc
    except OSError as exc:
        raise DownloadError(f"{transfer.url} -> {target}: {exc}") from exc


def _make_parents(to_dir: Path, target: Path) -> None:
    """Create target's directories below to_dir, refusing any symbolic link on the way."""
    current = to_dir
    for name in target.relative_to(to_dir).parts[:-1]:
        current = current / name
        if current.is_symlink():
            raise DownloadError(f"{current}: is a symbolic link, refusing to write through it")
        current.mkdir(exist_ok=True)
    for path in (target, target.with_name(f".{target.name}.part")):
        if path.is_symlink():
            raise DownloadError(f"{path}: is a symbolic link, refusing to write through it")


def _transfer(url: str, part: Path, retries: int, timeout: float) -> int:
    """Complete ``part`` from ``url``, resuming from its current size; returns the bytes received."""
    received = 0
    for attempt in range(retries + 1):
        pause = min(2.0**attempt, 30.0)
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                total, offset = _expected_size(response, offset)
                flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if offset else os.O_TRUNC)
                with os.fdopen(os.open(part, flags, 0o644), "wb") as out:
                    while chunk := response.read(CHUNK_BYTES):
                        out.write(chunk)
                        received += len(chunk)
            size = part.stat().st_size
            if total is None or size == total:
                return received
            error = f"connection closed at byte {size} of {total}"
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # the part is not a prefix of the file (it changed or is too long)
                part.unlink(missing_ok=True)
                error, pause = "range not satisfiable, restarting", 0.0
            elif exc.code < 500:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            else:
                error = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
            error = str(getattr(exc, "reason", exc))
        if attempt < retries:
            time.sleep(pause)
    raise DownloadError(f"{url}: failed after {retries + 1} attempts, last: {error} (run again to resume)")


def _expected_size(response, offset: int) -> tuple[int | None, int]:
    """(full size if known, offset the body starts at) of a response to a request from ``offset``."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None or int(match[1]) != offset:
            raise http.client.HTTPException(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        return (None if match[3] == "*" else int(match[3])), offset
    # 200: the whole file, whatever was asked
    return (int(length) if length is not None else None), 0


def verify_file(path: Path, *, checksum: bool, name: Path | None = None) -> None:
    """Check a downloaded FITS file (other files pass): it opens, its HDUs fill it exactly, with
    ``checksum`` the CHECKSUM/DATASUM cards it has hold, and a cube has its images. CubeError
    names ``name`` (default: path)."""
    name = name or path
    if path.suffix.lower() != ".fits" and not name.name.lower().endswith(".fits"):
        return
    with _VERIFYING:
        _verify_fits(path, name, checksum)


def _verify_fits(path: Path, name: Path, checksum: bool) -> None:
    end, size = _fits_end(path, name, checksum=False), path.stat().st_size
    if size != end:
        raise CubeError(f"{name}: {'truncated' if size < end else 'trailing bytes'}: {size} bytes, its HDUs span {end}")
    if checksum:  # only once the sizes agree: astropy leaves a truncated file open when it fails on one
        _fits_end(path, name, checksum=True)
    if _CUBE_NAME.fullmatch(name.name):
        try:
            open_cube(path).close()
        except CubeError as exc:
            raise CubeError(str(exc).replace(str(path), str(name))) from exc


def _fits_end(path: Path, name: Path, checksum: bool) -> int:
    """The byte where a FITS file's last HDU ends, or CubeError."""
    # astropy reports bad checksums and truncation as warnings; recorded, so that it still closes the file
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AstropyUserWarning)
        try:
            with fits.open(path, checksum=checksum) as hdul:
                hdul.readall()
                end = max(info["datLoc"] + info["datSpan"] for info in map(hdul.fileinfo, range(len(hdul))))
        except Exception as exc:
            raise CubeError(f"{name}: not a valid FITS file ({exc})") from exc
    problems = [str(w.message).strip() for w in caught if issubclass(w.category, AstropyUserWarning)]
    if problems:
        raise CubeError(f"{name}: not a valid FITS file ({problems[0]})")
    return end
