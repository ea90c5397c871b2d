"""The CLI entry: instant help with no heavy imports, one-line errors."""

from __future__ import annotations

import subprocess
import sys
import time


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys, io, contextlib\n"
        "from tunelab.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'fastapi', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    assert out.stdout.strip() == ""
    assert elapsed < 5  # generous: this is a smoke check, the benchmark is `time tunelab --help`


def test_python_dash_m_lists_commands():
    out = subprocess.run([sys.executable, "-m", "tunelab", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "usage: tunelab" in out.stdout


def test_every_command_module_imports_without_torch():
    from tunelab.cli import COMMANDS

    for name, (module, _help) in COMMANDS.items():
        code = f"import sys, tunelab.commands.{module}; print('torch' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "False", f"tunelab {name} imports torch at start-up"
