"""Facts and helpers every layer shares: no torch, no other gradlab layer.

- :mod:`gradlab.common.atomic`: the one way a file is written (whole or not at all);
- :mod:`gradlab.common.names`: safe names for experiments and runs.
"""
