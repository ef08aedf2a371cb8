"""Comparing two learning rules run on the same seeds: the paired t interval and the equivalence test.

Why paired: with one run per seed for each rule, much of the spread between seeds (the initial weights, the
batch order) is shared by the two rules. The differences d_i = a_i - b_i, one per seed, cancel it; an
unpaired interval keeps it and is wider, a normal (z) interval ignores that n is small and is too narrow.

    d_bar = (1/n) sum_i d_i,   s = sqrt(sum_i (d_i - d_bar)^2 / (n - 1)),   se = s / sqrt(n)
    interval at confidence c:  d_bar -+ t_{(1+c)/2, n-1} * se                        (Student t, n - 1 df)

Equivalence at a margin m (e.g. 0.25 accuracy points, m = 0.0025 for accuracies in [0, 1]) is shown by
the two one-sided tests (TOST, Schuirmann 1987), each at level alpha = 5%:

    H0: delta <= -m   against   delta > -m:   t_lo = (d_bar + m) / se,   p_lo = P(T_{n-1} >= t_lo)
    H0: delta >= +m   against   delta < +m:   t_hi = (d_bar - m) / se,   p_hi = P(T_{n-1} <= t_hi)

Both rejected (max(p_lo, p_hi) < alpha) is the same as the 1 - 2 alpha = 90% interval lying inside (-m, m).
"Not shown equivalent" is not "different": that needs the 95% interval to exclude 0.

There is no SciPy here (it is not a dependency of minimf), so the Student t distribution is computed
below: its CDF from the regularised incomplete beta function (a continued fraction), its quantiles by
bisection on the CDF. tests/test_stats.py checks both against printed t tables and, where SciPy happens
to be installed, against scipy.stats.t.
"""
import math
import statistics
from dataclasses import dataclass

# --- the Student t distribution ----------------------------------------------------------------------


def log_beta(a, b):
    """log B(a, b) = log Gamma(a) + log Gamma(b) - log Gamma(a + b)."""
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def beta_fraction_term(k, x, a, b):
    """The k-th partial numerator d_k (k >= 1) of the continued fraction of I_x(a, b) (Numerical
    Recipes (6.4.6)), with m = k // 2:

        d_(2m+1) = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))
        d_(2m)   =  m (b - m) x / ((a + 2m - 1)(a + 2m))
    """
    m = k // 2
    if k % 2 == 1:
        return -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
    return m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))


def beta_continued_fraction(x, a, b, tol=1e-15, max_terms=10_000):
    """1 / (1 + d_1 / (1 + d_2 / (1 + ...))) by the modified Lentz method: the value after k terms is
    the previous value times C_k D_k, where C_k and D_k are ratios of successive numerators and
    denominators, updated without ever forming those (which could overflow)."""
    tiny = 1e-300                      # stands in for a zero denominator
    value, C, D = tiny, tiny, 0.0      # the fraction's leading term is 0
    for k in range(max_terms):
        numerator = 1.0 if k == 0 else beta_fraction_term(k, x, a, b)
        D = 1.0 + numerator * D
        D = 1.0 / (D if abs(D) > tiny else tiny)
        C = 1.0 + numerator / C
        C = C if abs(C) > tiny else tiny
        value *= C * D
        if abs(C * D - 1.0) < tol:
            return value
    raise ArithmeticError(f"the continued fraction of I_x(a, b) did not converge (x={x}, a={a}, b={b})")


def incomplete_beta(x, a, b):
    """The regularised incomplete beta function I_x(a, b) = B(x; a, b) / B(a, b), 0 <= x <= 1:

        I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) * 1 / (1 + d_1 / (1 + d_2 / (1 + ...)))

    The fraction converges fast for x < (a + 1) / (a + b + 2); above, I_x(a, b) = 1 - I_(1-x)(b, a)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"incomplete_beta needs 0 <= x <= 1, got {x}")
    if x in (0.0, 1.0):
        return x
    if x > (a + 1) / (a + b + 2):
        return 1.0 - incomplete_beta(1.0 - x, b, a)
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - log_beta(a, b)) / a
    return front * beta_continued_fraction(x, a, b)


def t_cdf(t, df):
    """P(T <= t) for Student's t with ``df`` degrees of freedom. The two tails together are
    P(|T| >= |t|) = I_x(df/2, 1/2) with x = df / (df + t^2); each tail is half of that."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * incomplete_beta(df / (df + t * t), df / 2, 0.5)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p, df):
    """The t with P(T <= t) = p, by bisection on ``t_cdf`` (it is increasing): the bracket [0, hi]
    doubles until it holds the answer, then halves until it is 1e-12 wide (relative). t(1 - p) = -t(p)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p == 0.5:
        return 0.0                     # the median, exactly
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


# --- paired comparisons ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairedInterval:
    """The mean of the paired differences a - b, its Student t interval [low, high] at ``confidence``,
    the number of pairs n and the sample standard deviation of the differences."""
    mean: float
    low: float
    high: float
    confidence: float
    n: int
    std: float

    def excludes_zero(self):
        return self.low > 0 or self.high < 0


def paired_differences(a, b):
    """d_i = a_i - b_i as floats; a and b hold one value per seed, in the same seed order."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) != len(b):
        raise ValueError(f"paired samples need one value per seed for each side: got {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError(f"a paired interval needs at least 2 pairs (seeds), got {len(a)}: one pair has no spread")
    if not all(math.isfinite(v) for v in a + b):
        raise ValueError("paired samples must be finite numbers")
    return [x - y for x, y in zip(a, b)]


def paired_interval(a, b, confidence=0.95):
    """The mean difference a - b and its Student t interval d_bar -+ t_{(1+c)/2, n-1} s / sqrt(n).

    n = 1 is an error (no spread to estimate). Differences all equal (s = 0) give the interval
    [d_bar, d_bar]: with zero mean, [0, 0]."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie between 0 and 1, got {confidence}")
    d = paired_differences(a, b)
    n, mean, std = len(d), statistics.fmean(d), statistics.stdev(d)
    half = t_quantile((1 + confidence) / 2, n - 1) * std / math.sqrt(n)
    return PairedInterval(mean, mean - half, mean + half, confidence, n, std)


@dataclass(frozen=True)
class Equivalence:
    """The outcome of ``tost``: the two one-sided p-values, the 1 - 2 alpha interval they match, the
    1 - alpha interval that decides "different", and the verdict in words."""
    margin: float
    alpha: float
    p_lower: float              # H0: delta <= -margin
    p_upper: float              # H0: delta >= +margin
    interval_tost: PairedInterval   # 90% at alpha = 5%
    interval: PairedInterval        # 95% at alpha = 5%

    @property
    def equivalent(self):
        return max(self.p_lower, self.p_upper) < self.alpha

    @property
    def different(self):
        return self.interval.excludes_zero()

    @property
    def verdict(self):
        """"equivalent", "equivalent, but different" (a difference shown, smaller than the margin),
        "different", or "not shown equivalent" (neither shown: more seeds would tell)."""
        if self.equivalent:
            return "equivalent, but different" if self.different else "equivalent"
        return "different" if self.different else "not shown equivalent"


def one_sided_p(distance, se, df):
    """P(T_df >= distance / se): the p-value of one of the two one-sided tests, where ``distance`` is
    how far the mean difference lies inside the margin on that test's side. With se = 0 (all
    differences equal) the statistic is infinite: p = 0 strictly inside the margin, else 1."""
    if se == 0:
        return 0.0 if distance > 0 else 1.0
    return 1.0 - t_cdf(distance / se, df)


def tost(a, b, margin, alpha=0.05):
    """The paired two one-sided tests of equivalence of a and b within (-margin, +margin).

    p_lower = P(T >= (d_bar + m) / se), p_upper = P(T <= (d_bar - m) / se), T with n - 1 df;
    equivalent iff both are below alpha, i.e. iff the 1 - 2 alpha interval lies inside (-m, m)."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must lie between 0 and 0.5, got {alpha}")
    d = paired_differences(a, b)
    n, mean = len(d), statistics.fmean(d)
    se = statistics.stdev(d) / math.sqrt(n)
    return Equivalence(margin=margin, alpha=alpha,
                       p_lower=one_sided_p(mean + margin, se, n - 1),
                       p_upper=one_sided_p(margin - mean, se, n - 1),   # P(T <= -x) = P(T >= x)
                       interval_tost=paired_interval(a, b, 1 - 2 * alpha),
                       interval=paired_interval(a, b, 1 - alpha))
