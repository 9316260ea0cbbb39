"""Code that runs in a worker: top-level, synchronous, picklable, no anyio.

Whatever executes the estimator (a thread, a worker process or a Dask worker) calls
these functions with small arguments: a model or a handle naming it, the kind of
computation, the caller's scikit-learn settings, the texts. One job a module:

- ``threads``: the caller's scikit-learn settings and capped native threads per call;
- ``transport``: results and exceptions crossing back from another process whole;
- ``compute``: predictions, and batches run with the failing texts found by bisection;
- ``training``: fits, partial fits and the steps of online learning;
- ``fingerprint``: a model's identity across processes;
- ``packing``: vocabularies as arrays, for files and other processes;
- ``handles``: model versions shipped to worker processes as files, and fits in files;
- ``cluster``: what runs in a Dask worker.

Nothing here imports anyio (``tests/test_work.py`` checks it).
"""
