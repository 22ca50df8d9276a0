"""Latent tokenizers, installed as `djepa.tokenizers`.

From the repository root this folder is also importable as the top-level name `tokenizers`, which would shadow
Hugging Face's `tokenizers` package (the one `transformers` imports). Imported under that name, this module
hands over: it loads the real package from the rest of `sys.path` in its place, or, when none is installed,
fails as a missing module would. Imported as `djepa.tokenizers`, it does nothing.
"""

if __name__ == "tokenizers":
    import importlib.machinery
    import importlib.util
    import os
    import sys

    def _hand_over() -> None:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
        path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
        spec = importlib.machinery.PathFinder.find_spec("tokenizers", path)
        del sys.modules["tokenizers"]
        if spec is None or spec.loader is None:
            raise ModuleNotFoundError("No module named 'tokenizers'", name="tokenizers")
        real = importlib.util.module_from_spec(spec)
        sys.modules["tokenizers"] = real  # the import system returns what sys.modules holds after this runs
        try:
            spec.loader.exec_module(real)
        except BaseException:
            sys.modules.pop("tokenizers", None)
            raise

    _hand_over()
