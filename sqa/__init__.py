"""sqa: small, fast non-intrusive speech quality assessment.

Importing the package has no side effects: no torch import, no disk access.
"""

__version__ = "0.1.0"
