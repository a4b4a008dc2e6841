"""LatentMAS on the latentmas engine.

    import latentmas
    engine = latentmas.Engine("path/to/Qwen3-0.6B", device="cpu", kv_budget=16384)
    for piece in engine.generate("What is 12 plus 30?", max_new_tokens=64):
        print(piece, end="", flush=True)
    report = engine.run("What is 12 plus 30?", method="latent", latent_steps=10, greedy=True,
                        max_new_tokens=256, return_latents=True)
    report["answer"], report["latents"][0]["vectors"].shape   # (10, hidden_size)

Keyword arguments are named as the CLI's flags (`task_family`, `latent_steps`, `greedy`, `max_new_tokens`,
...). The engine works with the GIL released; Ctrl-C stops it within one step and raises
KeyboardInterrupt. Errors are `ValueError` for bad arguments and `latentmas.Error` otherwise, with the
engine's message.
"""

import numpy as np

from . import _native
from ._native import Error, TokenStream

__all__ = ["Engine", "Error", "TokenStream"]
__version__ = _native.__version__


class Engine(_native.Engine):
    """A model loaded once, with one KV buffer every call reuses (calls on one engine serialise)."""

    def run(self, question, **kwargs):
        """Answers `question`; returns the report as a dict (`latentmas run --json`'s fields).

        With return_latents=True, report["latents"] lists each thinking agent's fed vectors as
        {"role": str, "vectors": numpy.ndarray of shape (latent_steps, hidden_size), float32}.
        """
        report = super().run(question, **kwargs)
        if "latents" in report:
            report["latents"] = [
                {"role": role, "vectors": np.frombuffer(raw, dtype=np.float32).reshape(m, -1).copy()}
                for role, raw, m in report["latents"]
            ]
        return report
