"""Alias of :mod:`gradlab.bench.gpu`, kept because ``python -m gradlab.bench_gpu`` is documented."""

from gradlab.bench.gpu import main

if __name__ == "__main__":
    raise SystemExit(main())
