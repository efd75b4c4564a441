"""Certified values and identities of the curves: Eq. 9 <-> Eq. 14, the Jacobian, the peak, the rivals."""

import numpy as np
import pytest
from scipy.special import lambertw

from fitting.curves import (
    emergence,
    emergence_eq14,
    emergence_jacobian,
    eq9_to_eq14,
    eq14_to_eq9,
    first_order_step,
    log_rise,
    second_order_peak,
    second_order_step,
    t_peak,
)
from fitting.synthetic import paper_like_steps, pythia_steps

PYTHIA_410M_LAYER0 = dict(A=0.19914, lam=0.12452, gamma=1.1244e-4, t0=0.62122, K=0.12193)  # docs/science.md §2.5
STEPS = pythia_steps().astype(float)


def random_params(rng, n):
    """Eq. 9 parameter sets spanning early peaks, mid-course peaks and slow rises."""
    return [
        dict(
            A=rng.uniform(-50, 50),
            lam=10 ** rng.uniform(-3, 0.7),
            gamma=10 ** rng.uniform(-5, -2),
            t0=10 ** rng.uniform(-1.5, 0.7),
            K=rng.uniform(-10, 100),
        )
        for _ in range(n)
    ]


def test_schedules_are_pythia_and_paper_like():
    steps = pythia_steps()
    assert steps.size == 154 and steps[0] == 0 and steps[-1] == 143000
    assert list(steps[:12]) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    subset = paper_like_steps()
    assert subset.size == 37 and np.all(np.diff(subset) > 0) and np.isin(subset, steps).all()


def test_eq9_and_eq14_round_trip_both_ways():
    rng = np.random.default_rng(0)
    for p in random_params(rng, 50):
        eq14 = eq9_to_eq14(**p)
        back = eq14_to_eq9(*eq14)
        np.testing.assert_allclose(back, [p[k] for k in ("A", "lam", "gamma", "t0", "K")], rtol=1e-12)
        again = eq9_to_eq14(*back)
        np.testing.assert_allclose(again, eq14, rtol=1e-12, atol=1e-15)


def test_eq14_is_the_same_curve_as_eq9():
    rng = np.random.default_rng(1)
    for p in random_params(rng, 20):
        np.testing.assert_allclose(
            emergence_eq14(STEPS, *eq9_to_eq14(**p)), emergence(STEPS, **p), rtol=1e-10, atol=1e-10 * abs(p["A"])
        )


def test_jacobian_matches_central_differences():
    rng = np.random.default_rng(2)
    t = paper_like_steps().astype(float)
    for p in random_params(rng, 20) + [PYTHIA_410M_LAYER0]:
        names = list(p)
        analytic = emergence_jacobian(t, **p)
        for j, name in enumerate(names):
            h = 1e-5 * max(abs(p[name]), 1e-8)
            # K is additive: leaving it out of the differences keeps their rounding error small.
            base = dict(p, K=0.0) if name != "K" else p
            up, down = dict(base, **{name: base[name] + h}), dict(base, **{name: base[name] - h})
            numeric = (emergence(t, **up) - emergence(t, **down)) / (2 * h)
            scale = np.abs(numeric).max() + 1e-12
            np.testing.assert_allclose(analytic[:, j], numeric, rtol=0, atol=1e-6 * scale, err_msg=name)


def test_t_peak_is_where_the_derivative_vanishes():
    p = PYTHIA_410M_LAYER0
    peak = t_peak(p["lam"], p["gamma"], p["t0"])
    # Closed form of Eqs. 11-13, evaluated independently of the implementation.
    x_star = 1.0 / (p["lam"] * lambertw(1.0 / p["lam"]).real)
    assert peak == pytest.approx((x_star - p["t0"]) / p["gamma"], rel=1e-12)
    assert 30000 < peak < 45000
    slope = emergence_jacobian([peak], **p)[0, 3] * p["gamma"]  # df/dt = gamma * df/dt0
    assert abs(slope) < 1e-12
    assert emergence(peak, **p) > max(emergence(peak * 0.9, **p), emergence(peak * 1.1, **p))


def test_t_peak_is_nan_when_not_observable():
    assert np.isnan(t_peak(0.0, 1e-3, 1.0))  # pure logarithmic rise: no peak
    assert np.isnan(t_peak(5.0, 1e-3, 3.0))  # x* ~ 1.18 < t0: the peak lies before step 0
    both = t_peak(np.array([0.12452, 0.0]), 1.1244e-4, 0.62122)
    assert np.isfinite(both[0]) and np.isnan(both[1])


def test_log_rise_is_eq9_without_decay():
    np.testing.assert_allclose(log_rise(STEPS, 3.0, 2e-3, 1.5), emergence(STEPS, 3.0, 0.0, 2e-3, 1.0, 1.5), rtol=1e-13)


def test_first_order_step_reaches_63_percent_at_tau():
    assert first_order_step(250.0, 10.0, 250.0) == pytest.approx(10.0 * (1 - np.exp(-1)), rel=1e-14)
    assert first_order_step(0.0, 10.0, 250.0) == 0.0


@pytest.mark.parametrize("zeta", [0.1, 0.5, 0.9])
def test_second_order_overshoot_is_the_textbook_value(zeta):
    omega_n = 0.02
    peak = second_order_peak(zeta, omega_n)
    assert peak == pytest.approx(np.pi / (omega_n * np.sqrt(1 - zeta**2)), rel=1e-14)
    overshoot = np.exp(-zeta * np.pi / np.sqrt(1 - zeta**2))
    assert second_order_step(peak, 2.0, zeta, omega_n) == pytest.approx(2.0 * (1 + overshoot), rel=1e-12)


def test_second_order_damping_regimes_meet_continuously():
    t = np.linspace(0, 500, 101)
    critical = 1 - np.exp(-0.02 * t) * (1 + 0.02 * t)
    for zeta in (1 - 1e-9, 1.0, 1 + 1e-9):
        np.testing.assert_allclose(second_order_step(t, 1.0, zeta, 0.02), critical, atol=1e-8)
    # Heavily over-damped: the slow pole omega_n / (2 zeta) dominates, like a first-order step.
    np.testing.assert_allclose(second_order_step(t, 1.0, 1e4, 200.0), first_order_step(t, 1.0, 1e4 / 100.0), atol=1e-3)
    assert np.isnan(second_order_peak(1.0, 0.02)) and np.isnan(second_order_peak(3.0, 0.02))
