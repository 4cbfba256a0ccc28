//! The builder, reproducibility, summaries, CSV export and bad input.

use best_mcmc::{Best, Error, Group, PriorParams, Priors, RopeDecision, SigmaPrior};

fn small() -> (Vec<f64>, Vec<f64>) {
    let a: Vec<f64> = (0..300)
        .map(|i| 0.02 + 0.01 * ((i * 37 % 101) as f64 / 101.0))
        .collect();
    let b: Vec<f64> = (0..250)
        .map(|i| 0.03 + 0.01 * ((i * 53 % 97) as f64 / 97.0))
        .collect();
    (a, b)
}

/// Short chains: 400 draws in all. Their ESS threshold is lowered to 200 so that the summary
/// gives a verdict (the default 400 asks for more draws than a quick test runs).
fn quick() -> best_mcmc::BestParams {
    Best::params()
        .chains(2)
        .tune(300)
        .draws(200)
        .seed(11)
        .ess_min(200.0)
}

#[test]
fn same_seed_same_draws_threads_or_not() {
    let (a, b) = small();
    let f1 = quick().fit(&a, &b).unwrap();
    let f2 = quick().threads(false).fit(&a, &b).unwrap();
    assert_eq!(f1.draws("mu_diff").unwrap(), f2.draws("mu_diff").unwrap());
    assert_eq!(f1.draws("nu").unwrap(), f2.draws("nu").unwrap());
    let f3 = quick().seed(12).fit(&a, &b).unwrap();
    assert_ne!(f1.draws("mu_diff").unwrap(), f3.draws("mu_diff").unwrap());
    assert_eq!(f1.draws("mu_diff").unwrap().dim(), (2, 200));
}

#[test]
fn summary_finds_a_clear_difference_and_applies_the_rope() {
    let (a, b) = small();
    let fit = quick()
        .rope(-0.001, 0.001)
        .hdi_prob(0.9)
        .fit(&a, &b)
        .unwrap();
    let s = fit.summary();
    assert!(s.converged, "{:?}", s.convergence);
    // candidate - baseline is about +0.01.
    assert!(
        s.mu_diff.hdi_low > 0.0 && s.credible == Some(true),
        "{:?}",
        s.mu_diff
    );
    assert!((s.mu_diff.mean - 0.01).abs() < 0.002);
    assert_eq!(s.mu_diff.p_positive, 1.0);
    let rope = s.rope.unwrap();
    assert_eq!(rope.decision, Some(RopeDecision::Different));
    assert_eq!(rope.share_inside, 0.0);
    assert_eq!(s.hdi_prob, 0.9);
    assert!(s.log10_nu.mean > 0.0 && s.nu.mean > 1.0);
    let wide = quick().rope(-1.0, 1.0).fit(&a, &b).unwrap().summary();
    assert_eq!(wide.rope.unwrap().decision, Some(RopeDecision::Equivalent));
    assert_eq!(wide.rope.unwrap().share_inside, 1.0);
    // JSON-serialisable.
    let json = serde_json::to_value(&s).unwrap();
    assert!(json["mu_diff"]["diagnostics"]["ess_bulk"].as_f64().unwrap() > 0.0);
}

#[test]
fn short_runs_warn() {
    let (a, b) = small();
    let s = Best::params()
        .chains(2)
        .tune(50)
        .draws(20)
        .seed(1)
        .fit(&a, &b)
        .unwrap()
        .summary();
    assert!(
        s.warnings.iter().any(|w| w.contains("ESS")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn csv_has_every_draw() {
    let (a, b) = small();
    let fit = quick().fit(&a, &b).unwrap();
    let mut buf = Vec::new();
    fit.write_csv(&mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "chain,draw,mu1,mu2,sigma1,sigma2,nu,mu_diff,sigma_diff,effect_size,log10_nu,nu_minus_one"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 400);
    let last: Vec<f64> = rows[399].split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(last[0], 1.0);
    assert_eq!(last[1], 199.0);
    assert_eq!(last[7], fit.draws("mu_diff").unwrap()[[1, 199]]);
}

#[test]
fn kruschke_and_custom_priors_sample() {
    let (a, b) = small();
    let s = quick()
        .priors(Priors::Kruschke)
        .fit(&a, &b)
        .unwrap()
        .summary();
    assert!(s.mu_diff.hdi_low > 0.0);
    let custom = PriorParams {
        mu_mean: 0.5,
        mu_sd: 2.0,
        sigma: SigmaPrior::Uniform {
            low: 1e-4,
            high: 1.0,
        },
        nu_minus_one_rate: 0.1,
    };
    let s = quick()
        .priors(Priors::Custom(custom))
        .fit(&a, &b)
        .unwrap()
        .summary();
    assert_eq!(s.priors, custom);
    assert!(s.mu_diff.hdi_low > 0.0);
}

#[test]
fn bad_input_is_a_typed_error_before_sampling() {
    let (a, b) = small();
    let p = Best::params().probabilities(true);
    assert!(matches!(
        p.fit(&[], &b),
        Err(Error::EmptyGroup {
            group: Group::Baseline
        })
    ));
    assert!(matches!(
        p.fit(&a, &[]),
        Err(Error::EmptyGroup {
            group: Group::Candidate
        })
    ));
    let mut nan = b.clone();
    nan[7] = f64::NAN;
    assert!(matches!(
        p.fit(&a, &nan),
        Err(Error::NonFinite {
            group: Group::Candidate,
            index: 7,
            ..
        })
    ));
    let mut inf = a.clone();
    inf[3] = f64::INFINITY;
    assert!(matches!(
        p.fit(&inf, &b),
        Err(Error::NonFinite { index: 3, .. })
    ));
    let mut big = a.clone();
    big[5] = 1.5;
    assert!(matches!(
        p.fit(&big, &b),
        Err(Error::OutOfRange { index: 5, .. })
    ));
    // Out of [0, 1] is fine when the scores are not declared probabilities.
    assert!(quick().fit(&big, &b).is_ok());
    let constant = vec![0.25; 40];
    let e = p.fit(&a, &constant).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ConstantGroup {
                group: Group::Candidate,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_bad_input());
    assert!(e.to_string().contains("candidate"));

    for bad in [
        Best::params().chains(0),
        Best::params().draws(3),
        Best::params().target_accept(1.0),
        Best::params().max_depth(0),
        Best::params().hdi_prob(0.0),
        Best::params().rope(0.1, -0.1),
        Best::params().rhat_max(0.99),
        Best::params().rhat_max(f64::NAN),
        Best::params().ess_min(-1.0),
        Best::params().ess_min(f64::INFINITY),
        Best::params().retry_scale(0),
        Best::params().retry_scale(17),
        Best::params().priors(Priors::Custom(PriorParams {
            mu_mean: 0.0,
            mu_sd: -1.0,
            sigma: SigmaPrior::HalfCauchy { beta: 1.0 },
            nu_minus_one_rate: 1.0,
        })),
    ] {
        let e = bad.fit(&a, &b).unwrap_err();
        assert!(matches!(e, Error::InvalidParam { .. }), "{e}");
        assert!(e.is_bad_input());
    }
}

#[test]
fn tiny_groups_never_give_nan() {
    let s = quick()
        .fit(&[0.1, 0.2], &[0.3, 0.35, 0.5])
        .unwrap()
        .summary();
    for q in [&s.mu_diff, &s.sigma_diff, &s.effect_size, &s.nu] {
        assert!(
            q.mean.is_finite() && q.hdi_low.is_finite() && q.hdi_high.is_finite(),
            "{q:?}"
        );
    }
}

#[test]
fn a_short_fit_does_not_converge_and_gives_no_verdict() {
    let (a, b) = small();
    // 2 chains x 30 draws: far too few for a bulk and tail ESS of 400.
    let s = Best::params()
        .chains(2)
        .tune(30)
        .draws(30)
        .seed(3)
        .fit(&a, &b)
        .unwrap()
        .summary();
    let c = &s.convergence;
    assert!(!s.converged && !c.converged, "{c:?}");
    assert_eq!(s.credible, None);
    assert_eq!(c.attempts, 1, "a short fit is not retried");
    assert!(c.first_attempt.is_none());
    assert!(c.ess_bulk < 400.0 && c.ess_tail < 400.0, "{c:?}");
    assert!(
        c.problems.iter().any(|p| p.starts_with("bulk ESS"))
            && c.problems.iter().any(|p| p.starts_with("tail ESS")),
        "{:?}",
        c.problems
    );
    assert_eq!((c.chains, c.tune, c.draws), (2, 30, 30));
    assert_eq!((c.rhat_max, c.ess_min, c.max_divergences), (1.01, 400.0, 0));
    assert!(c.figures().starts_with("R-hat "), "{}", c.figures());
    // The figures behind the answer are the summary's own diagnostics of mu_diff.
    assert_eq!(c.ess_bulk, s.mu_diff.diagnostics.ess_bulk);
    assert_eq!(c.rhat, s.mu_diff.diagnostics.rhat);
    // In JSON: `converged: false`, `credible: null`.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["converged"], false);
    assert!(json["credible"].is_null(), "{}", json["credible"]);
    assert!(json["convergence"]["problems"].is_array());

    // The same fit with thresholds it meets converges and gives a verdict.
    let lenient = Best::params()
        .chains(2)
        .tune(30)
        .draws(30)
        .seed(3)
        .rhat_max(100.0)
        .ess_min(0.0)
        .max_divergences(usize::MAX)
        .fit(&a, &b)
        .unwrap()
        .summary();
    assert!(lenient.converged && lenient.credible.is_some());

    // One chain: no R-hat, so no convergence and no verdict.
    let one = Best::params()
        .chains(1)
        .tune(100)
        .draws(100)
        .ess_min(0.0)
        .fit(&a, &b)
        .unwrap()
        .summary();
    assert!(!one.converged && one.credible.is_none());
    assert!(one.convergence.problems[0].contains("no R-hat"));
}

#[test]
fn a_default_length_fit_that_does_not_converge_is_retried_once_with_longer_chains() {
    let (a, b) = small();
    // An ESS no fit can reach makes the default-length fit fail its check.
    let params = Best::params().chains(2).seed(5).ess_min(1e9);
    assert!(params.retries());
    let fit = params.clone().fit(&a, &b).unwrap();
    assert_eq!(fit.draws("mu_diff").unwrap().dim(), (2, 4000));
    let s = fit.summary();
    let c = &s.convergence;
    assert_eq!(c.attempts, 2);
    assert_eq!((c.tune, c.draws), (4000, 4000));
    assert_eq!((s.tune, s.draws), (4000, 4000));
    let first = c.first_attempt.as_deref().unwrap();
    assert_eq!((first.tune, first.draws, first.attempts), (1000, 1000, 1));
    assert!(!first.converged && !c.converged);
    assert_eq!(s.credible, None);
    // The longer chains have more effective draws.
    assert!(
        c.ess_bulk > first.ess_bulk,
        "{} vs {}",
        c.ess_bulk,
        first.ess_bulk
    );

    // A default-length fit that converges is not retried, nor is one with the retry off.
    let ok = Best::params().chains(2).seed(5).fit(&a, &b).unwrap();
    assert!(ok.convergence().converged, "{:?}", ok.convergence());
    assert_eq!(ok.convergence().attempts, 1);
    assert_eq!(ok.draws("mu_diff").unwrap().dim(), (2, 1000));
    let off = params.retry_scale(1);
    assert!(!off.retries());
    let fit = off.fit(&a, &b).unwrap();
    assert_eq!(fit.convergence().attempts, 1);
    assert_eq!(fit.draws("mu_diff").unwrap().dim(), (2, 1000));
    // Shorter than the default length: not retried.
    assert!(!Best::params().draws(999).retries());
    assert!(!Best::params().tune(500).retries());
}
