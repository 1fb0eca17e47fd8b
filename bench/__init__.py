"""Side-by-side benchmarks of govc_db against git, dulwich and the raw database driver.

Run ``python -m bench [--quick] [--backend sqlite|postgres|all] [--json out.json]``; the
regression workflow is ``python -m bench baseline|compare|update|report``, profiling
``python -m bench profile WORKLOAD`` (see ``bench/__main__.py`` and ``bench/RESULTS.md``).
Every figure is measured in the same run as its peer and reported as the ratio
ours / peer with its direction ("higher is better" or "lower is better"). Speed is
measured here, never asserted in tests.
"""
