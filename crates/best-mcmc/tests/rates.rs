//! The Beta(1,1)-Binomial rate comparison against scipy (closed form and quadrature).

use crate::common::load;
use best_mcmc::{Error, compare_rates};

#[test]
fn rate_comparison_matches_the_closed_form() {
    let cases = load("rates.json");
    for case in cases.as_array().unwrap() {
        let g = |k: &str| case[k].as_u64().unwrap();
        let f = |k: &str| case[k].as_f64().unwrap();
        let r = compare_rates(
            g("k_baseline"),
            g("n_baseline"),
            g("k_candidate"),
            g("n_candidate"),
            f("hdi_mass"),
        )
        .unwrap();
        let label = format!(
            "{}/{} vs {}/{}",
            g("k_baseline"),
            g("n_baseline"),
            g("k_candidate"),
            g("n_candidate")
        );
        // The fixture's difference is baseline − candidate; ours is candidate − baseline.
        assert!(
            (r.rate_diff.mean + f("rate_diff_mean")).abs() < 1e-15,
            "{label}: mean"
        );
        let p = f("p_candidate_higher");
        assert!(
            (r.p_candidate_higher - p).abs() < 1e-10,
            "{label}: P {} vs {p}",
            r.p_candidate_higher
        );
        assert!(
            (r.p_candidate_higher - f("p_candidate_higher_quad")).abs() < 1e-9,
            "{label}: P vs quadrature"
        );
        let (lo, hi) = (-f("rate_diff_hdi_high"), -f("rate_diff_hdi_low"));
        let e = (r.rate_diff.hdi_low - lo)
            .abs()
            .max((r.rate_diff.hdi_high - hi).abs());
        eprintln!(
            "{label}: HDI [{}, {}] vs scipy [{lo}, {hi}] (max |diff| {e:e})",
            r.rate_diff.hdi_low, r.rate_diff.hdi_high
        );
        assert!(e < 1e-6, "{label}: HDI");
        assert_eq!(r.rate_diff.credible, lo > 0.0 || hi < 0.0);
    }
}

#[test]
fn bad_counts_are_typed_errors() {
    assert!(matches!(
        compare_rates(5, 4, 0, 10, 0.95),
        Err(Error::BadCount { .. })
    ));
    assert!(matches!(
        compare_rates(0, 0, 0, 10, 0.95),
        Err(Error::BadCount { .. })
    ));
    let e = compare_rates(1, 10, 1, 10, 1.0).unwrap_err();
    assert!(e.is_bad_input());
}
