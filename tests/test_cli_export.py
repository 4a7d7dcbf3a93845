"""`vl2 export` then a run that uses the export, as a user does it: same captions as torch."""
from __future__ import annotations

import json

import pytest

from media_helpers.fixtures import MEDIA_FIXTURES, needs_fixtures
from reference_fixtures import reference_root
from test_cli import AV_FIXTURE, TINY_VIDEO, vl2, vl2_in_process
from vl2cli.commands.exit_codes import EXIT_OK

pytestmark = [
    pytest.mark.slow,
    needs_fixtures(reference=(AV_FIXTURE,), media=(TINY_VIDEO,)),
]


def test_export_then_caption_with_onnxruntime_equals_torch(tmp_path):
    checkpoint = str(reference_root() / AV_FIXTURE / "checkpoint")
    export_dir = tmp_path / "export"
    exported = vl2("export", "--model", checkpoint, "--export-dir", str(export_dir), "--engines", "no")
    assert exported.returncode == EXIT_OK, exported.stderr
    assert list(export_dir.rglob("manifest.json")), "export wrote no manifest"
    media = str(MEDIA_FIXTURES / TINY_VIDEO)
    common = ["caption", media, "--model", checkpoint, "--max-new-tokens", "6", "--quiet", "--log-level", "info"]
    # the export above is the command under test; the two runs that compare its use are in-process
    with_torch = vl2_in_process(*common, "--encoder-backend", "torch")
    with_ort = vl2_in_process(*common, "--encoder-backend", "onnxruntime", "--export-dir", str(export_dir))
    assert with_torch.returncode == EXIT_OK, with_torch.stderr
    assert with_ort.returncode == EXIT_OK, with_ort.stderr
    torch_record, ort_record = json.loads(with_torch.stdout), json.loads(with_ort.stdout)
    assert ort_record["modality"] == "av"  # all three exported components were used
    assert ort_record["output"] == torch_record["output"]
    assert "onnxruntime" in with_ort.stderr.lower()
