"""minimf/experiments/stats.py: the Student t distribution against printed tables, closed forms and
(where installed) SciPy; the paired interval and the equivalence test against hand computations, with
must-fail cases: an unpaired or a normal-quantile interval, or "the mean lies inside the margin", gives
a different answer on the same small example."""
import math
import statistics

import numpy as np
import pytest

from minimf.experiments.stats import (incomplete_beta, paired_interval, t_cdf, t_quantile, tost)

# t_{0.975, df} as printed in t tables (three decimals)
T_TABLE_975 = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 30: 2.042}


@pytest.mark.parametrize("df, printed", sorted(T_TABLE_975.items()))
def test_t_quantile_matches_the_printed_table(df, printed):
    mine = t_quantile(0.975, df)
    assert abs(mine - printed) < 5e-4, f"t_0.975,{df}: mine {mine}, table {printed}"


def test_t_quantile_one_sided_and_symmetric():
    assert abs(t_quantile(0.95, 4) - 2.132) < 5e-4           # the one-sided 5% column
    assert abs(t_quantile(0.995, 9) - 3.250) < 5e-4
    assert t_quantile(0.5, 7) == 0.0
    assert t_quantile(0.025, 4) == -t_quantile(0.975, 4)
    assert abs(t_quantile(0.975, 10_000) - 1.960) < 1e-3     # towards the normal quantile


@pytest.mark.parametrize("t", [-40.0, -3.0, -0.5, 0.0, 0.7, 2.0, 5.0, 1e3])
def test_t_cdf_matches_closed_forms(t):
    """df = 1 (Cauchy): 1/2 + atan(t)/pi; df = 2: 1/2 + t / (2 sqrt(2 + t^2))."""
    assert abs(t_cdf(t, 1) - (0.5 + math.atan(t) / math.pi)) < 1e-13
    assert abs(t_cdf(t, 2) - (0.5 + t / (2 * math.sqrt(2 + t * t)))) < 1e-13
    assert abs(t_cdf(t, 5) + t_cdf(-t, 5) - 1) < 1e-13


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 200])
@pytest.mark.parametrize("p", [0.0005, 0.05, 0.3, 0.9, 0.975, 0.9995])
def test_t_quantile_inverts_the_cdf(df, p):
    assert abs(t_cdf(t_quantile(p, df), df) - p) < 1e-10


def test_incomplete_beta_closed_forms():
    """I_x(a, 1) = x^a, I_x(1, b) = 1 - (1 - x)^b, I_x(a, b) = 1 - I_(1-x)(b, a)."""
    for x in (0.01, 0.3, 0.5, 0.77, 0.999):
        assert abs(incomplete_beta(x, 3.5, 1) - x ** 3.5) < 1e-13
        assert abs(incomplete_beta(x, 1, 2.5) - (1 - (1 - x) ** 2.5)) < 1e-13
        assert abs(incomplete_beta(x, 2.0, 7.5) + incomplete_beta(1 - x, 7.5, 2.0) - 1) < 1e-13
    assert incomplete_beta(0.0, 2, 3) == 0.0 and incomplete_beta(1.0, 2, 3) == 1.0
    with pytest.raises(ValueError, match="0 <= x <= 1"):
        incomplete_beta(1.5, 2, 3)


def test_bad_arguments_of_the_distribution():
    with pytest.raises(ValueError, match="0 < p < 1"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_cdf(1.0, 0)


def test_against_scipy_where_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    for df in (1, 2, 3, 4, 7, 9, 19, 30, 99):
        for p in (0.001, 0.025, 0.05, 0.1, 0.5, 0.9, 0.95, 0.975, 0.999):
            assert abs(t_quantile(p, df) - scipy_stats.t.ppf(p, df)) < 1e-9 * max(1, abs(scipy_stats.t.ppf(p, df)))
        for t in (-12.0, -2.5, -0.3, 0.0, 1.1, 4.0, 30.0):
            assert abs(t_cdf(t, df) - scipy_stats.t.cdf(t, df)) < 1e-12
    for a, b, x in ((0.5, 0.5, 0.2), (2.5, 0.5, 0.9), (15, 0.5, 0.6), (50, 60, 0.45)):
        assert abs(incomplete_beta(x, a, b) - special.betainc(a, b, x)) < 1e-12


# --- the paired interval --------------------------------------------------------------------------

# Two rules on three seeds: the seeds differ a lot (10, 21, 32), the rules by 1, 2, 3 on each seed.
A, B = [10.0, 21.0, 32.0], [9.0, 19.0, 29.0]


def test_paired_interval_by_hand():
    """d = 1, 2, 3: mean 2, s = 1, se = 1/sqrt(3), t_0.975,2 = 4.302653: 2 -+ 2.484138."""
    interval = paired_interval(A, B)
    assert interval.n == 3 and interval.mean == 2.0 and interval.std == 1.0
    assert abs(interval.low - (2 - 2.484138)) < 1e-6 and abs(interval.high - (2 + 2.484138)) < 1e-6
    assert interval.low < 0 < interval.high and not interval.excludes_zero()


def test_paired_interval_is_neither_the_normal_nor_the_unpaired_one():
    """Must fail: the normal quantile 1.96 makes the same example's interval exclude 0, and the
    unpaired (Welch) interval keeps the spread between seeds and is nine times wider."""
    interval = paired_interval(A, B)
    se = 1 / math.sqrt(3)
    normal = (2 - 1.959964 * se, 2 + 1.959964 * se)
    assert normal[0] > 0, "the normal interval excludes 0 here"
    assert abs(interval.low - normal[0]) > 1
    va, vb = statistics.variance(A) / 3, statistics.variance(B) / 3       # 121/3 and 100/3
    welch_df = (va + vb) ** 2 / ((va ** 2 + vb ** 2) / 2)                 # Satterthwaite: 3.96
    welch_width = 2 * t_quantile(0.975, welch_df) * math.sqrt(va + vb)
    assert welch_width > 9 * (interval.high - interval.low)


def test_paired_interval_edge_cases():
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_interval([0.98], [0.97])
    with pytest.raises(ValueError, match="one value per seed"):
        paired_interval([0.98, 0.97], [0.97])
    with pytest.raises(ValueError, match="finite"):
        paired_interval([0.98, float("nan")], [0.97, 0.96])
    with pytest.raises(ValueError, match="confidence"):
        paired_interval(A, B, confidence=95)
    same = paired_interval([0.98, 0.97, 0.99], [0.98, 0.97, 0.99])      # zero variance, zero mean
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    shifted = paired_interval([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])           # zero variance, mean 2
    assert (shifted.low, shifted.high) == (2.0, 2.0) and shifted.excludes_zero()


def test_wider_at_higher_confidence_and_narrower_with_more_seeds():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.98, 0.002, 10), rng.normal(0.979, 0.002, 10)
    i90, i95, i99 = (paired_interval(a, b, c) for c in (0.90, 0.95, 0.99))
    assert i99.low < i95.low < i90.low < i90.high < i95.high < i99.high


# --- the equivalence test -------------------------------------------------------------------------

def test_tost_by_hand_with_two_degrees_of_freedom():
    """d = 0.001, 0.002, 0.003 (accuracy), margin 0.0025: se = 0.001/sqrt(3), df = 2, where
    P(T <= t) = 1/2 + t / (2 sqrt(2 + t^2)). t_lo = 0.0045/se = 7.794, t_hi = -0.0005/se = -0.866."""
    a = [0.981, 0.982, 0.983]
    b = [0.980, 0.980, 0.980]
    se = 0.001 / math.sqrt(3)
    cdf2 = lambda t: 0.5 + t / (2 * math.sqrt(2 + t * t))
    result = tost(a, b, margin=0.0025)
    assert abs(result.p_lower - (1 - cdf2(0.0045 / se))) < 1e-9
    assert abs(result.p_upper - cdf2(-0.0005 / se)) < 1e-9
    assert abs(result.p_upper - 0.2389) < 1e-4
    # Must fail: the mean 0.002 lies inside the margin, yet equivalence is not shown
    assert abs(statistics.fmean(a) - statistics.fmean(b)) < 0.0025
    assert not result.equivalent and not result.different
    assert result.verdict == "not shown equivalent"


def test_tost_verdicts():
    rng = np.random.default_rng(1)
    base = rng.normal(0.98, 0.003, 8)          # the spread between seeds, shared by both rules
    close = tost(base + rng.normal(0, 1e-4, 8), base, margin=0.0025)
    assert close.verdict == "equivalent" and close.p_lower < 0.05 and close.p_upper < 0.05
    small_shift = tost(base + 0.0005 + rng.normal(0, 1e-4, 8), base, margin=0.0025)
    assert small_shift.verdict == "equivalent, but different"
    large_shift = tost(base + 0.01 + rng.normal(0, 1e-4, 8), base, margin=0.0025)
    assert large_shift.verdict == "different" and large_shift.p_upper > 0.5


def test_tost_is_the_90_percent_interval_inside_the_margin():
    """Equivalent at alpha = 5% exactly when the 90% interval lies inside (-margin, margin)."""
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(300):
        n = int(rng.integers(2, 12))
        a = rng.normal(0.98, 0.003, n)
        b = a + rng.normal(rng.uniform(-0.004, 0.004), rng.uniform(1e-4, 3e-3), n)
        result = tost(a, b, margin=0.0025)
        i90 = paired_interval(a, b, 0.90)
        assert result.equivalent == (-0.0025 < i90.low and i90.high < 0.0025)
        assert result.different == paired_interval(a, b, 0.95).excludes_zero()
        seen.add(result.verdict)
    assert seen == {"equivalent", "equivalent, but different", "different", "not shown equivalent"}


def test_tost_with_zero_variance_and_bad_margins():
    same = tost([0.98, 0.97], [0.98, 0.97], margin=0.0025)
    assert (same.p_lower, same.p_upper, same.verdict) == (0.0, 0.0, "equivalent")
    apart = tost([0.99, 0.98], [0.98, 0.97], margin=0.0025)      # always 1 point better
    assert apart.p_upper == 1.0 and apart.verdict == "different"
    with pytest.raises(ValueError, match="margin must be positive"):
        tost(A, B, margin=0)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        tost([0.98], [0.97], margin=0.0025)
