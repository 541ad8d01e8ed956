import subprocess
import sys

import pytest

from kdlora.cli import build_parser, command_modules, main


def test_every_command_has_help(capsys):
    names = list(command_modules())
    for name in names:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: kdlora {name}")
        assert len(command_modules()[name].HELP) > 10


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: kdlora" in capsys.readouterr().out


def test_bad_flag_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--no-such-flag"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


def test_python_dash_m_runs():
    out = subprocess.run([sys.executable, "-m", "kdlora", "--version"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.startswith("kdlora ")
