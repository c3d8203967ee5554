"""Facts and helpers every layer shares: no torch, no other gradlab layer.

- :mod:`gradlab.common.metrics`: the metric schema, the one source of metric names, scopes,
  sources, units and labels;
- :mod:`gradlab.common.atomic`: the one way a file is written (whole or not at all);
- :mod:`gradlab.common.jsonsafe`: the one way values become strict JSON (NaN as null);
- :mod:`gradlab.common.fit`: the one slope fit of a depth profile;
- :mod:`gradlab.common.names`: safe names for experiments and runs.
"""
