"""sqa: small, fast non-intrusive speech quality assessment.

    import sqa
    sqa.load().score("clip.wav")   # MOS 1-5 with the default shipped student (sqa.pretrained)

Importing the package has no side effects: no torch import, no disk access (``sqa.load`` is
imported on first use).
"""

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def __getattr__(name: str):
    if name == "load":
        from sqa.pretrained import load

        return load
    raise AttributeError(f"module 'sqa' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "load"])
