"""Grading a class (issue 23): the time to grade 100 submissions of the seed network, with ``--jobs`` 1 and 2.

The class is 70 correct files and 30 with mistakes (copies of tests/grade/seed/), so the mistake search runs
on a third of them. Each submission runs in its own process; the times include starting those processes,
building the grader once (printed apart) and the search. Medians of ``BENCH_REPEATS`` runs (default 3).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from symbackprop.grading import Grader
from symbackprop.grading.batch import grade_all

SEED = Path(__file__).resolve().parent.parent / "tests" / "grade" / "seed"
BUGGY = ("bias_not_summed", "bias_wrong_axis", "extra_half", "forgot_relu_derivative", "sign_flipped",
         "transposed_weight_gradient", "two_mistakes", "z_for_a", "mean_over_batch", "input_gradient_wrong_weight")


def make_class(folder: Path) -> None:
    for index in range(70):
        shutil.copy(SEED / "correct_by_hand.py", folder / f"correct_{index:02d}.py")
    for index in range(30):
        shutil.copy(SEED / f"{BUGGY[index % len(BUGGY)]}.py", folder / f"buggy_{index:02d}.py")


def main(repeats: int | None = None) -> dict:
    repeats = repeats or int(os.environ.get("BENCH_REPEATS", "3"))
    start = time.perf_counter()
    grader = Grader()
    print(f"Grader for the seed network (derivation, instances, catalogue): {time.perf_counter() - start:.2f} s")
    results = {}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        make_class(folder)
        print(f"100 submissions (70 correct, 30 with mistakes), median of {repeats}; {os.cpu_count()} cores")
        for jobs in (1, 2):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                outcomes = grade_all(grader, [folder], jobs=jobs)
                times.append(time.perf_counter() - start)
            assert sum(outcome.ok for outcome in outcomes) == 70, "a correct submission was graded wrong"
            results[jobs] = statistics.median(times)
            print(f"  --jobs {jobs}: {results[jobs]:6.2f} s  ({1000 * results[jobs] / 100:.0f} ms per submission)")
    print(f"  speed-up with 2 jobs: {results[1] / results[2]:.2f}x")
    return results


if __name__ == "__main__":
    main()
