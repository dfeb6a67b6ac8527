"""end2you-visual: facial affect recognition in real-world video, End2You-style.

The data flows one way: video -> faces/labels -> HDF5 -> reader -> model ->
predictions -> metrics/post-processing. See ``docs/`` for the user guide.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_pretrained", "list_pretrained"]


def __getattr__(name):
    # The zoo imports torch models; keep `import end2you_visual` light.
    if name in ("load_pretrained", "list_pretrained"):
        from . import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module 'end2you_visual' has no attribute {name!r}")
