"""Stage 3: BuildContext -> TrainedArtifact, by running the generated ``train.py``.

``train`` is the one entry point: on this host (``host.py``) or in a container from the
serving image's pins (``container.py``); ``outcome.py`` decides what either run means.
"""

from __future__ import annotations

from collections.abc import Callable

from ..engine import Engine
from ..models import BuildContext, TrainedArtifact
from .outcome import load_artifact

__all__ = ["load_artifact", "train"]


def train(
    context: BuildContext,
    progress: Callable[[str], None] | None = None,
    *,
    engine: Engine | None = None,
    base_image: str | None = None,
    timeout: float | None = None,
) -> TrainedArtifact:
    """Train the build context: in a container on ``engine`` when given, else on this host.

    ``timeout``: seconds after which the run is killed and TrainingError says so.
    """
    if engine is None:
        from .host import train_on_host

        return train_on_host(context, progress, timeout)
    from .container import train_in_container

    return train_in_container(
        context, engine, base_image=base_image, progress=progress, timeout=timeout
    )
