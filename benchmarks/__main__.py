"""``python -m benchmarks`` (``make bench``): the verification benchmarks, then each other suite present.

A suite is a module under ``benchmarks/`` with a ``main()`` that prints its results; add its name to
``SUITES`` to have it run here.
"""

import importlib
import importlib.util

SUITES = ("benchmarks.verification", "benchmarks.training", "benchmarks.batchnorm", "benchmarks.blas_floor",
          "benchmarks.depth", "benchmarks.sequences", "benchmarks.conv", "benchmarks.grading", "benchmarks.frameworks")


def main() -> None:
    for name in SUITES:
        if importlib.util.find_spec(name) is not None:
            print(f"\n=== {name} ===", flush=True)
            importlib.import_module(name).main()


if __name__ == "__main__":
    main()
