"""Shared helpers of the training tests: fixture paths, tiny configs, a fake snippets archive."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

DATA = Path(__file__).parent / "data" / "train"

# id, mean rating, text: positives, negatives and near-neutral ones that the binary task drops
SNIPPETS = [(i, rating, text) for i, (rating, text) in enumerate([
    (2.5, "a great film"), (-2.0, "a bad movie"), (1.8, "very good"), (-1.5, "not good at all"),
    (0.2, "the film is a film"), (3.1, "great great great"), (-3.0, "bad bad bad"), (1.2, "good movie"),
    (-1.1, "a very bad film"), (0.4, "it is a movie"), (2.2, "the movie is great"), (-2.6, "the film is bad"),
] * 5, start=1)]


def tiny_config(task="sst2", family="bert", method="fft", **overrides):
    from kdlora.config import TrainConfig

    values = dict(task=task, family=family, method=method, tiny=True, epochs=1, batch_size=4, device="cpu",
                  learning_rate=1e-3)
    if task in ("sst2", "mnli", "stsb", "cola"):
        values["data_dir"] = str(DATA / task)
    values.update(overrides)
    return TrainConfig(**values)


def fake_snippets_archive(folder: Path) -> tuple[Path, str]:
    """A tar.gz with the vaderSentiment sdist's inner layout and our few snippets; returns (path, sha256)."""
    lines = "".join(f"{i}\t{rating}\t{text}\r\n" for i, rating, text in SNIPPETS).encode()
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        _add(tar, "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt", lines)
    outer_path = folder / "vaderSentiment-3.3.2.tar.gz"
    with tarfile.open(outer_path, "w:gz") as tar:
        _add(tar, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", inner.getvalue())
    return outer_path, hashlib.sha256(outer_path.read_bytes()).hexdigest()


def _add(tar, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def install_fake_snippets(cache: Path) -> None:
    """Extract the fake archive into `cache` (KDLORA_CACHE) so the snippet tasks load without a download."""
    from kdlora.data.snippets import extract_snippets

    archive, digest = fake_snippets_archive(cache)
    extract_snippets(archive, digest)
