"""Fetch, check and unpack ISLES 2018 archives; resolve the data folder.

Modelled on nilearn's dataset fetchers:

- the data folder comes from :mod:`stroke_helpers.locations` (an argument, else
  ``$STROKE_DATA_DIR``, else ``./data``);
- downloads go through :func:`pooch.retrieve` (checksum, temporary file, atomic move) with a
  downloader that resumes a cut connection from the bytes already on disk (HTTP ``Range``);
- archives are extracted into a temporary folder beside the target, every member checked to stay
  inside it, ``__MACOSX`` junk dropped, the layout validated, and only then moved into place. A
  wrong checksum or a failure half-way leaves nothing in the target, and an existing dataset is
  replaced only with ``force=True``.

SMIR, where the archives were first published, is closed; the organisers re-published them as
Zenodo record 17736412, so :func:`fetch_isles2018` takes a URL and checksum or a local archive.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
from functools import partial
from pathlib import Path, PurePosixPath

import pooch
import requests
from tqdm.auto import tqdm

from . import files
from .isles import SPLITS, verify_dataset

#: md5 of the official archives (docs/decisions.md §5), by file name.
KNOWN_MD5 = {
    "ISLES2018_Training.zip": "b6d16c456e173743e30a3fbdb3bd29a5",
    "ISLES2018_Testing.zip": "932a493c105024942700fe589cd441a9",
}


class DownloadError(RuntimeError):
    """A download, checksum or extraction problem; nothing was written to the target."""


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class ResumableDownloader:
    """A pooch downloader that keeps a ``.part`` file and resumes it with HTTP ``Range``.

    A cut connection is retried ``retries`` times, each time asking only for the missing bytes;
    a server that ignores ``Range`` (answers 200) is read again from the start. The ``.part``
    file survives a crash of the whole process, so the next call resumes too.
    """

    def __init__(self, part_dir: str | os.PathLike, retries: int = 5, timeout: float = 60, progressbar: bool = True):
        self.part_dir = Path(part_dir)
        self.retries = retries
        self.timeout = timeout
        self.progressbar = progressbar

    @staticmethod
    def file_name(url: str) -> str:
        """The file name a URL points to (``download`` when it has none)."""
        return PurePosixPath(requests.utils.urlparse(url).path).name or "download"

    def part_path(self, url: str) -> Path:
        return self.part_dir / f"{hashlib.sha1(url.encode()).hexdigest()[:10]}-{self.file_name(url)}.part"

    def __call__(self, url: str, output_file, pooch_obj=None, check_only: bool = False):
        if check_only:
            return requests.head(url, timeout=self.timeout, allow_redirects=True).ok
        part = self.part_path(url)
        part.parent.mkdir(parents=True, exist_ok=True)
        bar = None
        for attempt in range(self.retries + 1):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
                    if r.status_code == 416:  # nothing left to fetch
                        break
                    if r.status_code >= 400:
                        raise DownloadError(f"{url}: HTTP {r.status_code} {r.reason}; nothing downloaded")
                    if have and r.status_code != 206:
                        have = 0  # the server ignored Range: start again
                    total = have + int(r.headers.get("Content-Length", 0))
                    if bar is None:
                        bar = tqdm(
                            total=total or None,
                            initial=have,
                            unit="B",
                            unit_scale=True,
                            desc=self.file_name(url),
                            disable=not self.progressbar,
                        )
                    else:
                        bar.reset(total=total or None)
                        bar.update(have)
                    try:
                        with open(part, "ab" if have else "wb") as f:
                            for chunk in r.iter_content(chunk_size=1 << 16):
                                f.write(chunk)
                                bar.update(len(chunk))
                    except OSError as exc:  # a full disk: one line (the .part is kept, to resume)
                        if isinstance(exc, requests.RequestException):
                            raise
                        raise files.describe(exc, part) from None
                    if total and part.stat().st_size < total:
                        raise requests.ConnectionError("connection closed early")
                break
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                if attempt == self.retries:
                    if bar:
                        bar.close()
                    raise DownloadError(
                        f"download of {url} failed after {self.retries + 1} attempts ({exc}); "
                        f"{part} is kept and the next call resumes it"
                    ) from exc
                time.sleep(min(2**attempt, 10) * 0.1)
        if bar:
            bar.close()
        os.replace(part, output_file)


def check_url(url: str) -> None:
    """Only ``http://`` and ``https://`` URLs are downloaded; anything else is refused as such."""
    scheme = requests.utils.urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"{scheme}://" if scheme else "no scheme"
        raise DownloadError(
            f"{url}: only http:// and https:// URLs are downloaded ({shown}); for a local file use --archive"
        )


def remove_stale_temporaries(dest_dir: Path) -> list[Path]:
    """Empty temporary files that a killed download left behind (pooch's ``tmp*`` beside the
    downloads, an empty ``.partial/*.part``); a ``.part`` with bytes stays, to be resumed."""
    stale = [
        p for p in (*dest_dir.glob("tmp*"), *dest_dir.glob(".partial/*.part")) if p.is_file() and p.stat().st_size == 0
    ]
    for p in stale:
        p.unlink()
    if stale:
        print(f"{dest_dir}: removed {len(stale)} empty temporary file(s) left by an interrupted download")
    return stale


def download(url: str, md5: str, dest_dir: str | os.PathLike, progressbar: bool = True, retries: int = 5) -> Path:
    """Download ``url`` into ``dest_dir`` (resumable), check its md5, and return the file.

    On a checksum mismatch the file is deleted and :class:`DownloadError` raised. Only http and
    https URLs are accepted; an HTTP error status is one :class:`DownloadError` line.
    """
    check_url(url)
    dest_dir = Path(dest_dir)
    if dest_dir.is_dir():
        remove_stale_temporaries(dest_dir)
    downloader = ResumableDownloader(dest_dir / ".partial", retries=retries, progressbar=progressbar)
    try:
        path = pooch.retrieve(
            url, known_hash=f"md5:{md5}", fname=downloader.file_name(url), path=dest_dir, downloader=downloader
        )
    except ValueError as exc:  # pooch: hash mismatch (the downloaded file is already removed)
        raise DownloadError(f"{url}: checksum mismatch, nothing kept ({exc})") from exc
    return Path(path)


def check_md5(archive: str | os.PathLike, md5: str | None = None) -> str:
    """Verify an archive against ``md5`` or the known checksum of its name; return its md5."""
    archive = Path(archive)
    if not archive.is_file():
        raise DownloadError(f"{archive}: no such archive")
    expected = (md5 or KNOWN_MD5.get(archive.name) or "").lower()
    actual = md5sum(archive)
    if expected and actual != expected:
        raise DownloadError(f"{archive}: checksum mismatch (md5 {actual}, expected {expected}); nothing extracted")
    return actual


def _member_target(root: Path, name: str) -> Path | None:
    """Where a member lands under ``root``; ``None`` for junk; error if it would escape ``root``."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if parts and (parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1] == ".DS_Store"):
        return None
    target = (root / name).resolve()
    if (
        name.startswith(("/", "\\"))
        or ":" in (parts[0] if parts else "")
        or ".." in parts
        or not target.is_relative_to(root.resolve())
    ):
        raise DownloadError(f"refusing archive member {name!r}: it would be written outside {root}")
    return target


#: The largest file of ISLES 2018 is a 4D series (256 x 256 x 22 x 64 int16, 185 MB); a member
#: declaring more than this is not ISLES data.
MAX_MEMBER_BYTES = 1 << 30
#: Declared size over archive size. NIfTI volumes compress a few times (masks far more), so a
#: whole ISLES archive stays well under this; a zip bomb does not.
MAX_RATIO = 100


def check_sizes(archive: Path, dest: Path, sizes: dict[str, int]) -> None:
    """Refuse, before anything is written, an archive whose members declare an absurd size, an
    absurd compression ratio, or more bytes than ``dest`` has free."""
    for name, size in sizes.items():
        if size > MAX_MEMBER_BYTES:
            raise DownloadError(
                f"refusing archive member {name!r}: it declares {size / 1e6:.0f} MB, more than any ISLES file "
                f"({MAX_MEMBER_BYTES / 1e6:.0f} MB at most)"
            )
    total, packed = sum(sizes.values()), max(archive.stat().st_size, 1)
    if total / packed > MAX_RATIO:
        raise DownloadError(
            f"{archive}: refusing to extract: it declares {total / 1e6:.0f} MB from {packed / 1e6:.1f} MB "
            f"(compression ratio {total / packed:.0f}, more than {MAX_RATIO}: a decompression bomb?)"
        )
    free = shutil.disk_usage(dest).free
    if total > free:
        raise DownloadError(f"{archive}: needs {total / 1e9:.1f} GB to extract but {dest} has {free / 1e9:.1f} GB free")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a ``.zip`` or ``.tar[.gz]`` into ``dest``, refusing members (or links, devices,
    fifos) that escape it, and archives that declare absurd sizes (:func:`check_sizes`)."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:  # check everything before writing anything
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DownloadError(f"refusing archive member {info.filename!r}: symbolic link")
                _member_target(dest, info.filename)
            check_sizes(archive, dest, {i.filename: i.file_size for i in members})
            for info in tqdm(members, desc=f"extract {archive.name}", unit="file", leave=False):
                if _member_target(dest, info.filename) is not None:
                    zf.extract(info, dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                if m.issym() or m.islnk():
                    raise DownloadError(f"refusing archive member {m.name!r}: link")
                if not (m.isfile() or m.isdir()):
                    raise DownloadError(f"refusing archive member {m.name!r}: a device, fifo or other special file")
                _member_target(dest, m.name)
            check_sizes(archive, dest, {m.name: m.size for m in members if m.isfile()})
            keep = [m for m in members if _member_target(dest, m.name) is not None]
            tf.extractall(dest, members=keep, filter="data")
    else:
        raise DownloadError(f"{archive}: not a zip or tar archive (corrupt or incomplete download?)")
    return dest


def _find_splits(root: Path) -> dict[str, Path]:
    found = {}
    for depth in ("*", "*/*"):
        for p in root.glob(depth):
            if p.is_dir() and p.name in SPLITS and p.name not in found:
                found[p.name] = p
    return found


def install_archive(
    archive: str | os.PathLike, out: str | os.PathLike, md5: str | None = None, force: bool = False
) -> list[str]:
    """Check, extract and validate an ISLES 2018 archive into ``out`` (``out/TRAINING`` etc.).

    Returns the splits installed. Raises :class:`DownloadError` with nothing changed in ``out``
    on a bad checksum, an unsafe member, a layout without ``TRAINING/``/``TESTING/`` or a split
    that already exists (unless ``force``).
    """
    archive, out = Path(archive), Path(out)
    check_md5(archive, md5)
    with files.lock(out, f"install {archive.name} into {out}"):
        for split in SPLITS:  # what a killed install left: its extraction and half-swapped splits
            files.recover(out / split)
        for stale in out.glob(f"{EXTRACT_PREFIX}*") if out.is_dir() else ():
            shutil.rmtree(stale, ignore_errors=True)
        try:
            out.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=EXTRACT_PREFIX, dir=out) as tmp:
                return _install_splits(archive, out, Path(tmp), force)
        except OSError as exc:
            raise files.describe(exc, getattr(exc, "filename", None) or out) from None


#: The temporary folder an archive is extracted into, inside the dataset folder.
EXTRACT_PREFIX = ".extract-"


def _foreign(split_dir: Path) -> list[str]:
    """What in an installed split folder is not a ``case_N`` folder (someone else's files)."""
    return sorted(p.name for p in split_dir.iterdir() if not (p.is_dir() and re.fullmatch(r"case_\d+", p.name)))


def _install_splits(archive: Path, out: Path, tmp: Path, force: bool) -> list[str]:
    safe_extract(archive, tmp)
    splits = _find_splits(tmp)
    if not splits:
        raise DownloadError(f"{archive}: no TRAINING/ or TESTING/ folder inside; not an ISLES 2018 archive")
    _, problems = verify_dataset(next(iter(splits.values())).parent, splits=tuple(splits))
    if problems:
        raise DownloadError(f"{archive}: the extracted data has problems:\n  " + "\n  ".join(problems))
    existing = [s for s in splits if (out / s).exists()]
    if existing and not force:
        raise DownloadError(f"{out}: {', '.join(existing)} already exists; pass --force to replace it")
    for split in existing:  # --force replaces installed splits only: case_N folders and nothing else
        foreign = _foreign(out / split) if (out / split).is_dir() else [f"{split} (a file)"]
        if foreign:
            raise DownloadError(
                f"{out / split}: not an installed split (it holds {', '.join(foreign[:5])}); --force replaces "
                "only case_N folders: move these away or choose another --out"
            )
    for split, src in splits.items():
        files.swap_in(src, out / split)
    return sorted(splits)


def fetch_isles2018(
    out: str | os.PathLike,
    archive: str | os.PathLike | None = None,
    url: str | None = None,
    md5: str | None = None,
    force: bool = False,
    progressbar: bool = True,
) -> list[str]:
    """Install ISLES 2018 into ``out`` from a local ``archive`` or a ``url`` (with its ``md5``)."""
    if (archive is None) == (url is None):
        raise DownloadError("give exactly one of an archive path or a URL")
    out = Path(out)
    if url is not None:
        if not md5:
            raise DownloadError("a download needs its md5 checksum (--md5)")
        archive = download(url, md5, out / "downloads", progressbar=progressbar)
    return install_archive(archive, out, md5=md5, force=force)


# --- the arterial territory atlas (the phantom's vascular territories) ---------------------

#: Liu C.-F. et al., Digital 3D Brain MRI Arterial Territories Atlas, Scientific Data 10, 74 (2023);
#: CC BY-SA 4.0, (c) 2021 The Johns Hopkins University. Pinned to the commit that still has the
#: compressed files; fetched at run time, never committed to this repository.
ATLAS_URL = "https://github.com/Chin-Fu-Liu/Arterial_Atlas/raw/67722b8ac55985267bc978df2e57ab9d72ef2c72/data/"
ATLAS_MD5 = {
    "ArterialAtlas.nii.gz": "30c24774be7bcfbdb7bcc85371bdd23a",
    "ArterialAtlas_level2.nii.gz": "7fa52718791190d28ac50d9a4a2e42a6",
    "ArterialAtlasLables.txt": "1da7cce4e548469ac81e06c172db6623",
}
ATLAS_CREDIT = (
    "JHU arterial territory atlas: Liu C.-F., Hsu J., Xu X., et al., Digital 3D Brain MRI Arterial "
    "Territories Atlas, Scientific Data 10, 74 (2023); CC BY-SA 4.0, (c) 2021 The Johns Hopkins University"
)


def _install_files(sources: dict[str, Path], out: Path) -> Path:
    """Check every file's md5 first, then copy them all into ``out`` (nothing on any mismatch),
    each atomically."""
    for name, path in sources.items():
        if not path.is_file():
            raise DownloadError(f"{path}: missing; nothing installed")
        actual = md5sum(path)
        if actual != ATLAS_MD5[name]:
            raise DownloadError(
                f"{path}: checksum mismatch (md5 {actual}, expected {ATLAS_MD5[name]}); nothing installed"
            )
    for name, path in sources.items():
        files.save_with(out / name, partial(shutil.copyfile, path))
    return out


def fetch_arterial_atlas(
    out: str | os.PathLike, source: str | os.PathLike | None = None, base_url: str = ATLAS_URL, progressbar: bool = True
) -> Path:
    """Install the arterial territory atlas into ``out``: from a local folder ``source`` (its md5s
    checked) or downloaded from the commit-pinned ``base_url`` (pooch, md5-checked). A corrupted
    copy is refused and nothing is installed. Already installed and intact: nothing to do."""
    out = Path(out)
    if all((out / n).is_file() and md5sum(out / n) == m for n, m in ATLAS_MD5.items()):
        return out
    if source is not None:
        return _install_files({n: Path(source) / n for n in ATLAS_MD5}, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fetched = {n: download(base_url + n, m, tmp, progressbar=progressbar) for n, m in ATLAS_MD5.items()}
        return _install_files(fetched, out)
