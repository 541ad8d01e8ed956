"""Reading and writing result files: a failure never leaves a half-written report or loses one already there,
and a file that is missing or not JSON is one UserError naming it."""

from __future__ import annotations

import contextlib
import json
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


def read_json(run_dir: str | Path, name: str) -> dict:
    path = Path(run_dir) / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run_dir}: not a kdlora run folder (no {name})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
