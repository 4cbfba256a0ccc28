"""Python peer for the `best-mcmc` benchmark: PyMC's NUTS on the same model and data.

Fits the paper's BEST model (mu ~ N(0, 1), sigma ~ HalfCauchy(10), nu - 1 ~ Exp(1/29)) to the
parity fixture's 2 x 2,400 scores with 4 chains x (1,000 tune + 1,000 draws), once cold (model
compilation included) and then `--repeats` times warm, and prints one JSON line per run with the
wall time and ArviZ's bulk ESS (mu_diff and the minimum over mu1, mu2, sigma1, sigma2, nu).

    .venv-ref/bin/python crates/best-mcmc/benches/pymc_peer.py [--cores 1] [--repeats 2]
"""
import argparse
import json
import pathlib
import time

import numpy as np

FIXTURE = pathlib.Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "best" / "scores.json"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    t_import = time.perf_counter()
    import arviz as az
    import pymc as pm

    az.Numba.disable_numba()
    d = json.loads(FIXTURE.read_text())
    y1, y2 = np.array(d["baseline"]), np.array(d["candidate"])
    with pm.Model() as model:
        mu1 = pm.Normal("mu1", mu=0.0, sigma=1.0)
        mu2 = pm.Normal("mu2", mu=0.0, sigma=1.0)
        sigma1 = pm.HalfCauchy("sigma1", beta=10.0)
        sigma2 = pm.HalfCauchy("sigma2", beta=10.0)
        nu = pm.Deterministic("nu", pm.Exponential("nu_minus_one", lam=1.0 / 29.0) + 1.0)
        pm.StudentT("y1", nu=nu, mu=mu1, sigma=sigma1, observed=y1)
        pm.StudentT("y2", nu=nu, mu=mu2, sigma=sigma2, observed=y2)
        pm.Deterministic("mu_diff", mu1 - mu2)
    import_s = time.perf_counter() - t_import
    for r in range(args.repeats + 1):
        t = time.perf_counter()
        with model:
            idata = pm.sample(
                draws=1000, tune=1000, chains=4, cores=args.cores, random_seed=args.seed + r,
                progressbar=False, compute_convergence_checks=False,
            )
        wall = time.perf_counter() - t
        post = idata.posterior
        ess = {k: float(az.ess(post[k].values, method="bulk")) for k in ["mu_diff", "mu1", "mu2", "sigma1", "sigma2", "nu"]}
        min_ess = min(v for k, v in ess.items() if k != "mu_diff")
        print(json.dumps({
            "run": "cold" if r == 0 else "warm", "cores": args.cores, "wall_s": round(wall, 3),
            "import_and_model_s": round(import_s, 3) if r == 0 else None,
            "ess_bulk_mu_diff": round(ess["mu_diff"]), "ess_bulk_min_param": round(min_ess),
            "ess_per_s_mu_diff": round(ess["mu_diff"] / wall, 1), "ess_per_s_min_param": round(min_ess / wall, 1),
            "divergences": int(idata.sample_stats["diverging"].values.sum()),
        }), flush=True)


if __name__ == "__main__":
    main()
