"""Side-by-side benchmarks of govc_db against git, dulwich and the raw database driver.

Run ``python -m bench [--quick] [--backend sqlite|postgres|all] [--json out.json]``.
Every figure is measured in the same run as its peer and reported as the ratio
ours / peer with its direction ("higher is better" or "lower is better"). Speed is
measured here, never asserted in tests.
"""
