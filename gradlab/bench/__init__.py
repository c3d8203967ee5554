"""Benchmarks: what the recorder, the store and the reports cost.

Outside the library's core: nothing in gradlab imports this package except the ``gradlab bench``
command. Each module runs as ``python -m gradlab.bench.<name>``:

- :mod:`overhead`: the recorder's cost per training step, against the same loop without it;
- :mod:`fixed`: the per-step cost that does not shrink with the model;
- :mod:`gpu`: every GPU row of the cost table in one call;
- :mod:`store`: the run store's write and read speed;
- :mod:`report`: report size and build and draw times (and the synthetic runs tests use).
"""
