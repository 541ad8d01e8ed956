"""Manifests: a folder written with one knows whether it is whole; one written before manifests still loads."""

import json
import shutil

import pytest

from kdlora.cli import main
from kdlora.errors import UserError
from kdlora.files import check_writable, verify, write_manifest

HINT = "the test folder is damaged: re-run it, or pass --no-verify to load anyway"


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("0123456789")  # 10 bytes
    (tmp_path / "sub" / "b.bin").write_bytes(b"\x00" * 4)
    write_manifest(tmp_path, "m.json", {"kind": "test"})
    return tmp_path


def test_the_manifest_lists_every_other_file_with_size_and_sha256(folder):
    manifest = json.loads((folder / "m.json").read_text())
    assert manifest["kind"] == "test" and manifest["manifest_version"] == 1
    assert {k: v["size"] for k, v in manifest["files"].items()} == {"a.txt": 10, "sub/b.bin": 4}
    # sha256 of b"0123456789", as `printf 0123456789 | sha256sum` prints it
    assert manifest["files"]["a.txt"]["sha256"] == "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882"
    assert verify(folder, "m.json", "test folder") == manifest


@pytest.mark.parametrize("change, problem", [
    (lambda f: (f / "a.txt").unlink(), "a.txt: missing"),
    (lambda f: (f / "a.txt").write_text("01234"), "a.txt: truncated (5 of 10 bytes)"),
    (lambda f: (f / "a.txt").write_text(""), "a.txt: empty (written with 10 bytes)"),
    (lambda f: (f / "a.txt").write_text("0123456780"), "a.txt: changed since it was written (sha256 differs)"),
    (lambda f: (f / "a.txt").write_text("0123456789!"), "a.txt: changed since it was written (sha256 differs)"),
    (lambda f: (f / "m.json").write_text((f / "m.json").read_text().replace('"test"', '"tent"')),
     "m.json: changed since it was written (its sha256 differs)"),
])
def test_each_damage_is_named(folder, change, problem):
    change(folder)
    with pytest.raises(UserError) as caught:
        verify(folder, "m.json", "test folder")
    assert str(caught.value) == f"{folder}/{problem}; {HINT}"


def test_a_file_added_later_is_no_damage(folder):
    (folder / "notes.txt").write_text("mine")
    verify(folder, "m.json", "test folder")


def test_a_run_saved_before_manifests_loads_with_a_note(pristine, tmp_path, capsys):
    run = tmp_path / "lora"
    shutil.copytree(pristine / "lora", run)
    info = json.loads((run / "run.json").read_text())
    old = {k: info[k] for k in ("kind", "base", "num_labels")}  # run.json as kdlora wrote it before manifests
    (run / "run.json").write_text(json.dumps(old))
    assert main(["predict", str(run), "a great film"]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"note: {run} was saved without a file manifest (by an older kdlora): not verified\n"
    assert captured.out.endswith("\ta great film\n")


def test_an_output_folder_is_checked_without_creating_it(tmp_path):
    check_writable(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"file/out: cannot create the output folder \(.*file is a file\)"):
        check_writable(tmp_path / "file" / "out")
