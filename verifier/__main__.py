import os
import sys

# `python -m` puts the working directory first on sys.path.  Started inside a benchmark folder,
# whose properties live in a folder called vnnlib/, that folder would shadow the vnnlib parser
# (as a namespace package) under an editable install: the working directory is not ours to import.
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) != _root:
    sys.path.pop(0)

from verifier.cli import main  # noqa: E402

sys.exit(main())
