//! The log density and its gradient against PyMC's `compile_logp()` / `compile_dlogp()`.

use crate::common::{f64s, load, scores};
use best_mcmc::{BestModel, Priors};

#[test]
fn log_density_matches_pymc_with_and_without_jacobian() {
    let (y1, y2, _, _) = scores();
    let cases = load("logp.json");
    let mut worst = 0.0f64;
    let mut worst_grad = 0.0f64;
    for case in cases.as_array().unwrap() {
        let priors = match case["priors"].as_str().unwrap() {
            "paper" => Priors::Paper,
            "kruschke" => Priors::Kruschke,
            other => panic!("unknown prior set {other}"),
        };
        let model = BestModel::new(&y1, &y2, &priors, true).unwrap();
        let p = f64s(&case["point"]);
        let theta: [f64; 5] = p.try_into().unwrap();
        for (jac, key, gkey) in [
            (true, "logp_jacobian", "dlogp_jacobian"),
            (false, "logp_no_jacobian", "dlogp_no_jacobian"),
        ] {
            let want = case[key].as_f64().unwrap();
            let got = model.log_density(&theta, jac);
            let err = (got - want).abs();
            worst = worst.max(err);
            assert!(
                err <= 1e-8,
                "{priors:?} at {theta:?}, jacobian {jac}: {got} vs PyMC {want} (|diff| {err:e})"
            );
            let mut g = [0.0; 5];
            let lp = model.log_density_grad(&theta, &mut g, jac);
            assert_eq!(lp, got);
            let want_g = f64s(&case[gkey]);
            for i in 0..5 {
                let scale = want_g[i].abs().max(1.0);
                let e = (g[i] - want_g[i]).abs() / scale;
                worst_grad = worst_grad.max(e);
                assert!(
                    e <= 1e-8,
                    "{priors:?} at {theta:?}, d/dtheta[{i}]: {} vs PyMC {}",
                    g[i],
                    want_g[i]
                );
            }
        }
    }
    eprintln!("worst |logp - PyMC| = {worst:e}, worst relative gradient error = {worst_grad:e}");
}
