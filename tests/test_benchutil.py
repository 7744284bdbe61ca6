"""tools/benchutil.py, shared by serve_bench.py and loadgen.py: pct agrees with numpy.percentile
(its default linear interpolation) on random samples of every size from 1 to 40."""
import math
import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from benchutil import pct  # noqa: E402


def test_pct_matches_numpy():
    rng = random.Random(7)
    for n in range(1, 41):
        values = [rng.expovariate(1.0) for _ in range(n)]
        for p in (0, 1, 25, 50, 90, 99, 99.9, 100):
            assert math.isclose(pct(values, p), float(np.percentile(values, p)), rel_tol=1e-12,
                                abs_tol=1e-15), (n, p)


def test_pct_of_nothing_is_nan():
    assert math.isnan(pct([], 50))
