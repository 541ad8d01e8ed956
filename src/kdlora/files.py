"""Reading and writing result files: a failure never leaves a half-written report or loses one already there,
a file that is missing or not JSON is one UserError naming it, and a folder kdlora wrote knows whether it is whole.

A manifest (a run's `run.json`, an export's `export.json`) is a JSON object with what the folder is plus
`manifest_version` and `files`: each file's path relative to the folder, its size and its sha256. `verify` reads it
and raises one UserError naming the first file that is missing, truncated or changed. A manifest without `files`
(a folder saved before kdlora kept manifests) loads unchecked, with a note on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kdlora.errors import UserError

MANIFEST_VERSION = 1
"""Version of the manifest's `files` layout; a newer one than this code knows is refused, not misread."""

DAMAGED_HINT = "re-run it, or pass --no-verify to load anyway"


def check_writable(out_dir: str | Path) -> None:
    """Raise a UserError unless `out_dir` is, or can be created as, a folder this process can write (creates
    nothing: the check a command makes before it spends time)."""
    out = Path(out_dir).absolute()
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{out_dir}: cannot create the output folder ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{out_dir}: cannot write the output folder ({existing} is not writable)")


@contextlib.contextmanager
def staged_output(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success move its entries into `out_dir`, replacing same-named ones.

    On any exception the staging folder is removed and `out_dir` is left exactly as it was (a folder this call
    created is removed again); a full disk or quota is one UserError naming the folder.
    """
    out = Path(out_dir)
    created = [folder for folder in (out, *out.parents) if not folder.exists()]  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create output folder ({exc.strerror})") from exc
    stage = Path(tempfile.mkdtemp(prefix=".kdlora-stage-", dir=out))
    try:
        yield stage
        for entry in sorted(stage.iterdir()):
            target = out / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            entry.rename(target)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):  # not empty: something else wrote there meanwhile
                folder.rmdir()
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"{out}: cannot write ({exc.strerror or os.strerror(exc.errno)}); nothing was "
                            "written there") from None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def read_json(run_dir: str | Path, name: str) -> dict:
    path = Path(run_dir) / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run_dir}: not a kdlora run folder (no {name})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except UnicodeDecodeError as exc:  # garbled bytes: not even text
        raise UserError(f"{path}: not valid JSON (not UTF-8 text at byte {exc.start})") from None


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | Path, name: str, info: dict) -> dict:
    """Write `folder/name`: `info` plus the size and sha256 of every file under `folder` (but the manifest)."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative != name:
            files[relative] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {**info, "manifest_version": MANIFEST_VERSION, "files": files}
    manifest["manifest_sha256"] = _own_digest(manifest)
    write_json(folder / name, manifest)
    return manifest


def _own_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without this digest: a changed manifest is caught too."""
    rest = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode("utf-8")).hexdigest()


def read_manifest(folder: str | Path, name: str, what: str) -> dict:
    """The manifest `folder/name` as a dict, unchecked; a UserError when it is missing or not a JSON object."""
    path = Path(folder) / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{folder}: not a {what} (no {name})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc.reason}); "
                        f"{DAMAGED_HINT}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); the {what} is damaged: "
                        "re-run it") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: not a kdlora manifest (a JSON {type(manifest).__name__}); the {what} is damaged: "
                        "re-run it")
    return manifest


def verify(folder: str | Path, name: str, what: str, older_ok: bool = True, hint: str = DAMAGED_HINT) -> dict:
    """The manifest `folder/name` after checking every file it lists: a UserError names the first file missing,
    truncated (smaller than written) or changed (another size or sha256), or outside the folder. Returns the
    manifest. `older_ok`: a manifest without `files` was written before kdlora kept them (else it is damaged).
    `hint`: what the error tells the user to do."""
    folder = Path(folder)
    manifest = read_manifest(folder, name, what)
    files = manifest.get("files")
    if files is None and not older_ok:
        raise UserError(f"{folder / name}: no list of files in it; the {what} is damaged: {hint}")
    if files is None:
        print(f"note: {folder} was saved without a file manifest (by an older kdlora): not verified", file=sys.stderr)
        return manifest
    version = manifest.get("manifest_version")
    if version != MANIFEST_VERSION or not isinstance(files, dict):
        raise UserError(f"{folder / name}: a manifest of another version ({version!r}; this kdlora reads "
                        f"{MANIFEST_VERSION}): {hint}")
    if manifest.get("manifest_sha256") != _own_digest(manifest):
        raise UserError(f"{folder / name}: changed since it was written (its sha256 differs); the {what} is "
                        f"damaged: {hint}")
    for relative, expected in files.items():
        problem = _damage(inside(folder, relative, f"{folder / name} lists"), expected)
        if problem:
            raise UserError(f"{folder / relative}: {problem}; the {what} is damaged: {hint}")
    return manifest


def inside(folder: str | Path, relative, named_by: str) -> Path:
    """`folder/relative` when it stays inside `folder`: a relative path without `..` whose every part (a link
    included) resolves under it; else a UserError saying `named_by` (e.g. "RUN/run.json lists") names a path
    outside. A folder may come from anyone: what it names must not reach the rest of the disk."""
    folder = Path(folder)
    path = Path(str(relative)) if isinstance(relative, str) and relative else None
    if path is None or path.is_absolute() or ".." in path.parts or \
            not (folder / path).resolve().is_relative_to(folder.resolve()):
        raise UserError(f"{named_by} {relative!r}, a path outside {folder}: a folder may only name its own files; "
                        "nothing was loaded")
    return folder / path


def _damage(path: Path, expected) -> str | None:
    """What is wrong with `path` against its manifest entry, or None when it is whole."""
    try:
        size, digest = int(expected["size"]), str(expected["sha256"])
    except (TypeError, KeyError, ValueError):
        return "its manifest entry is damaged"
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if actual == 0 and size > 0:
        return f"empty (written with {size:,} bytes)"
    if actual < size:
        return f"truncated ({actual:,} of {size:,} bytes)"
    if actual != size or sha256_file(path) != digest:
        return "changed since it was written (sha256 differs)"
    return None


@contextlib.contextmanager
def unreadable_is_damage(path: Path, what: str, where: str = "run folder") -> Iterator[None]:
    """A file under `path` that transformers, PEFT or safetensors cannot read is one UserError naming it."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # safetensors, JSON, config and shape errors alike: the folder is not whole
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: cannot load the {what} ({type(exc).__name__}: {first[:200]}); the {where} "
                        "is damaged: re-run it") from None


def add_no_verify_argument(parser) -> None:
    """`--no-verify` (dest `verify`) for the commands that read a run or exported folder."""
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="load the folder without checking its files against the sizes and sha256 recorded "
                             "when it was written")
