"""Benchmarks: what the recorder, the store and the reports cost.

Outside the library's core: nothing in gradlab imports this package except the ``gradlab bench``
command. The entry points run as ``python -m gradlab.bench.<name>``:

- :mod:`overhead`: the recorder's cost per training step against the same loop without it
  (built from :mod:`config`, :mod:`harness`, :mod:`arms`, :mod:`alternatives`, :mod:`stats`,
  :mod:`memory`, :mod:`environment`, :mod:`output` and :mod:`frames`);
- :mod:`fixed`: the per-step cost that does not shrink with the model;
- :mod:`gpu`: every GPU row of the cost table in one call (also ``python -m gradlab.bench_gpu``);
- :mod:`store`: the run store's write and read speed;
- :mod:`report`: report size and build and draw times (and the synthetic runs tests use).
"""
