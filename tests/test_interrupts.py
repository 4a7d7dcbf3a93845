"""Ctrl-C is the parent's to handle: the forkserver the decode workers come from starts with SIGINT
ignored (and so does each worker it forks), so a Ctrl-C while they import torch cannot print a
KeyboardInterrupt traceback from them."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from reference_fixtures import REPO_ROOT

#: Imported by the forkserver among its preloads, before it sets up its own handlers: it notes the
#: SIGINT disposition the forkserver started with.
_PROBE = textwrap.dedent("""
    import os, signal
    with open(os.environ["SIGINT_PROBE_OUT"], "w") as out:
        out.write("ignored" if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else "handled")
""")

_CHILD = textwrap.dedent("""
    from media_helpers.fixtures import PROCESSOR_CONFIGS
    from vl2cli.media.image import ImageProcessorSpec
    from vl2cli.media.loader import MediaSpec
    from vl2cli.media.workers import _PRELOAD_MODULES, DecodePool

    if __name__ == "__main__":
        spec = MediaSpec(num_frames=2, image=ImageProcessorSpec.from_config(PROCESSOR_CONFIGS["clip336"]), want_audio=False)
        pool = DecodePool(spec, workers=1, timeout_s=30)
        pool._ctx.set_forkserver_preload([*_PRELOAD_MODULES, "sigint_probe"])
        with pool:
            pass
""")


def test_the_forkserver_starts_with_sigint_ignored(tmp_path: Path) -> None:
    (tmp_path / "sigint_probe.py").write_text(_PROBE)
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    seen = tmp_path / "seen.txt"
    env = {**os.environ, "SIGINT_PROBE_OUT": str(seen),
           "PYTHONPATH": os.pathsep.join((str(REPO_ROOT), str(REPO_ROOT / "tests"), str(tmp_path)))}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert seen.read_text() == "ignored"
