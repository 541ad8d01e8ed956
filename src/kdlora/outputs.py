"""Writing results so that a failure never leaves a half-written report or loses one already there."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kdlora.errors import UserError


@contextlib.contextmanager
def staged_output(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success move its entries into `out_dir`, replacing same-named ones.

    On any exception the staging folder is removed and `out_dir` is left exactly as it was.
    """
    out = Path(out_dir)
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
    finally:
        shutil.rmtree(stage, ignore_errors=True)
