"""Which engine does the model half of a run: this process (`local`) or a Ray Data actor pool (`ray`)."""
from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import EngineUnavailableError, Vl2Error
from ..settings import Settings

if TYPE_CHECKING:
    from ..tasks.plan import Runner



def model_load_options(settings: Settings) -> dict[str, object]:
    """The keyword arguments of `vl2cli.load_model` a run's settings ask for (plain data: it travels to
    Ray actors, which load the model themselves)."""
    return {"model": settings.model, "revision": settings.revision, "device": settings.device, "dtype": settings.dtype,
            "frames": settings.frames, "encoder_backend": settings.encoder_backend, "device_map": settings.device_map,
            "export_dir": settings.export_dir, "engine_dir": settings.engine_dir}


@contextmanager
def engine_runner(settings: Settings) -> Iterator["Runner | None"]:
    """The runner for `settings.engine` (None: the local pipeline), shut down when the run ends."""
    if settings.engine == "local":
        yield None
        return
    if settings.segment:
        # Ray's actors are handed whole files (keyed by path); segments of one file would collide there.
        raise Vl2Error("segmenting long files (segment) runs on the local engine only, not on Ray yet")
    if importlib.util.find_spec("ray") is None:
        raise EngineUnavailableError("engine ray needs Ray Data, which is not installed: pip install 'vl2[ray]'")
    from .ray_engine import RayRunner

    runner = RayRunner(model_load_options(settings), address=settings.ray_address, actors=settings.actors)
    try:
        yield runner
    finally:
        runner.shutdown()
