"""D-JEPA: class-conditional generation of images, video and audio from continuous latent tokens.

`from djepa import Pipeline` loads a trained run or an exported folder; see `djepa.pipeline`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from djepa.pipeline import Generation, Pipeline

__all__ = ["Generation", "Pipeline"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import djepa.cli.config` (every console script) does not pay for torch and the model first.
    if name in __all__:
        from djepa import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'djepa' has no attribute {name!r}")
