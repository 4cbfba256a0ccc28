//! R-hat, ESS, MCSE and HDI against ArviZ 0.23 on fixed draws.

use crate::common::{f64s, load, rel};
use best_mcmc::diagnostics;
use ndarray::Array2;

#[test]
fn diagnostics_match_arviz() {
    let d = load("diagnostics.json");
    let mut worst = 0.0f64;
    for (name, case) in d.as_object().unwrap() {
        let rows: Vec<Vec<f64>> = case["draws"].as_array().unwrap().iter().map(f64s).collect();
        let (c, n) = (rows.len(), rows[0].len());
        let x = Array2::from_shape_vec((c, n), rows.concat()).unwrap();
        let x = x.view();
        let checks = [
            ("rhat_rank", diagnostics::rhat(x)),
            ("rhat_split", diagnostics::rhat_split(x)),
            ("ess_bulk", diagnostics::ess_bulk(x)),
            ("ess_tail", diagnostics::ess_tail(x)),
            ("ess_mean", diagnostics::ess_mean(x)),
            ("mcse_mean", diagnostics::mcse_mean(x)),
            ("mcse_sd", diagnostics::mcse_sd(x)),
        ];
        for (key, got) in checks {
            let want = case[key].as_f64().unwrap();
            let e = rel(got, want);
            worst = worst.max(e);
            assert!(e < 1e-9, "{name}.{key}: {got} vs ArviZ {want}");
        }
        let want = f64s(&case["bfmi"]);
        for (c, row) in x.rows().into_iter().enumerate() {
            let got = diagnostics::bfmi(row.as_slice().unwrap());
            assert!(
                rel(got, want[c]) < 1e-12,
                "{name}: bfmi of chain {c}: {got} vs {}",
                want[c]
            );
        }
        let flat: Vec<f64> = x.iter().copied().collect();
        for (key, prob) in [("hdi_95", 0.95), ("hdi_89", 0.89)] {
            let want = f64s(&case[key]);
            let got = diagnostics::hdi(&flat, prob);
            assert_eq!((got.0, got.1), (want[0], want[1]), "{name}.{key}");
        }
    }
    eprintln!("worst relative difference to ArviZ: {worst:e}");
}

#[test]
fn constant_and_short_inputs() {
    let x = Array2::from_elem((4, 100), 0.5);
    assert_eq!(diagnostics::ess_bulk(x.view()), 400.0);
    let short = Array2::from_elem((4, 3), 0.5);
    assert!(diagnostics::rhat(short.view()).is_nan());
    let one_chain = Array2::from_shape_fn((1, 50), |(_, j)| (j as f64).sin());
    assert!(diagnostics::rhat(one_chain.view()).is_nan());
    assert!(diagnostics::ess_bulk(one_chain.view()).is_finite());
}
