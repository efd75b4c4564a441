"""Every curve-predictor kind, held out model by model: error, blind baseline, skill, band coverage, time.

Data: the shipped tiny suites (data/tiny-suite-predict when built, data/tiny-suite) and the tests' synthetic
family (Eq. 9 curves whose parameters are a smooth function of the Table 4 features, 7 % probe noise over 10
sequences on the paper's 37 steps). Optionally with the recipe features, to see whether they help.

Run: `python -m benchmarks.curve_predictors [--kinds gaussian_process,gradient_boosting] [--recipe]`.
floor: the median |log difference| between seeds of one design; perfect: floor / √2, what a perfect predictor
of the expected curve would still miss one run by. Seconds are wall time of one leave-one-model-out pass on
this machine (compare kinds with each other).
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import polars as pl

from dynamics.embedded import PREDICT_SUITE_DIR, TINY_SUITE_DIR, shipped_architectures
from fitting.table import series_table
from predictors.dataset import curve_table
from predictors.features import FEATURES, RECIPE_FEATURES
from predictors.regressors import CURVE_KINDS, CurveRegressor
from predictors.skill import hold_out, seed_floor, summarise

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "predictors"))


def datasets() -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    """name -> (measurements, architectures)."""
    from synthetic_family import family_measurements

    found = {}
    for name, folder in (("tiny-suite-predict", PREDICT_SUITE_DIR), ("tiny-suite (full)", TINY_SUITE_DIR)):
        if (folder / "measurements.parquet").is_file():
            found[name] = (pl.read_parquet(folder / "measurements.parquet"), shipped_architectures())
    found["synthetic family"] = family_measurements()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(k for k in CURVE_KINDS if k != "xgboost"))
    parser.add_argument("--recipe", action="store_true", help="also with the recipe features (shipped data only)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(
        f"{'data':20s} {'kind':18s} {'recipe':6s} {'error':>6s} {'mean':>6s} {'base':>6s} {'skill':>6s} "
        f"{'cover':>6s} {'floor':>6s} {'perfect':>7s} {'s':>6s}"
    )
    for name, (measurements, architectures) in datasets().items():
        values = series_table(measurements)
        for recipe in (False, True) if args.recipe and name != "synthetic family" else (False,):
            table, _ = curve_table(measurements, architectures, recipe=recipe)
            floor = seed_floor(table, values)
            features = (*FEATURES, *RECIPE_FEATURES) if recipe else FEATURES
            for kind in args.kinds.split(","):
                start = time.perf_counter()
                heldout = hold_out(table, values, features, CurveRegressor(kind, random_state=0))
                s = summarise(heldout, table)
                print(
                    f"{name:20s} {kind:18s} {str(recipe):6s} {s['error']:6.3f} {s['error_mean']:6.3f} "
                    f"{s['baseline']:6.3f} {s['skill']:+6.2f} {s['coverage']:6.2f} "
                    f"{'' if floor is None else format(floor['median'], '.3f'):>6s} "
                    f"{'' if floor is None else format(floor['perfect'], '.3f'):>7s} "
                    f"{time.perf_counter() - start:6.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
