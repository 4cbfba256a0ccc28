//! The builder, reproducibility, summaries, CSV export and bad input.

mod common;

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

fn quick() -> best_mcmc::BestParams {
    Best::params().chains(2).tune(300).draws(200).seed(11)
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
    // baseline - candidate is about -0.01.
    assert!(s.mu_diff.hdi_high < 0.0 && s.credible, "{:?}", s.mu_diff);
    assert!((s.mu_diff.mean + 0.01).abs() < 0.002);
    assert_eq!(s.mu_diff.p_positive, 0.0);
    let rope = s.rope.unwrap();
    assert_eq!(rope.decision, RopeDecision::Different);
    assert_eq!(rope.share_inside, 0.0);
    assert_eq!(s.hdi_prob, 0.9);
    assert!(s.log10_nu.mean > 0.0 && s.nu.mean > 1.0);
    let wide = quick().rope(-1.0, 1.0).fit(&a, &b).unwrap().summary();
    assert_eq!(wide.rope.unwrap().decision, RopeDecision::Equivalent);
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
    assert!(s.mu_diff.hdi_high < 0.0);
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
    assert!(s.mu_diff.hdi_high < 0.0);
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
