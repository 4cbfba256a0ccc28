//! `toxdrift compare`: BEST and the toxic-rate comparison of two scored files, per subset and
//! over all prompts, written as one JSON file (design.md §3); the summary line (toxic rate
//! baseline → candidate, the difference with its HDI, the verdict, BEST's convergence) on
//! stdout; the sampler's problems in one line on stderr. Differences are candidate − baseline.

use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use toxdrift::best_mcmc::BestParams;
use toxdrift::error::{Error, Result};
use toxdrift::report::ScoreRow;
use toxdrift::study::Priors;
use toxdrift::{CompareSide, Compared, build_comparison};

/// Compare two models' scores with BEST (continuous scores) and a Beta-Binomial rate comparison.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scores JSONL of the baseline model (fields `id`, `subset`, `score`, `toxic`).
    #[arg(long)]
    pub baseline: PathBuf,
    /// Scores JSONL of the candidate model.
    #[arg(long)]
    pub candidate: PathBuf,
    /// Output JSON file (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// MCMC chains (run in parallel threads).
    #[arg(long, default_value_t = BestParams::default().get_chains())]
    pub chains: usize,
    /// Tuning iterations per chain.
    #[arg(long, default_value_t = BestParams::default().get_tune())]
    pub tune: usize,
    /// Kept draws per chain.
    #[arg(long, default_value_t = BestParams::default().get_draws())]
    pub draws: usize,
    /// Random seed (the same for every subset).
    #[arg(long, default_value_t = BestParams::default().get_seed())]
    pub seed: u64,
    /// Prior set.
    #[arg(long, value_enum, default_value_t = Priors::Paper)]
    pub priors: Priors,
    /// Mass of the highest-density intervals.
    #[arg(long, default_value_t = BestParams::default().get_hdi_prob())]
    pub hdi_prob: f64,
    /// Region of practical equivalence for mu_candidate − mu_baseline, e.g. `--rope -0.005 0.005`.
    #[arg(long, num_args = 2, value_names = ["LOW", "HIGH"], allow_negative_numbers = true)]
    pub rope: Option<Vec<f64>>,
    /// Convergence, for a verdict: the largest R-hat of the mu difference.
    #[arg(long, default_value_t = BestParams::default().get_rhat_max())]
    pub rhat_max: f64,
    /// Convergence, for a verdict: the smallest bulk and tail ESS of the mu difference.
    #[arg(long, default_value_t = BestParams::default().get_ess_min())]
    pub ess_min: f64,
    /// Convergence, for a verdict: the most divergent transitions (all chains).
    #[arg(long, default_value_t = BestParams::default().get_max_divergences())]
    pub max_divergences: usize,
    /// A default-length fit that does not converge is rerun once with this many times the
    /// tuning and draws (1: never).
    #[arg(long, default_value_t = BestParams::default().get_retry_scale())]
    pub retry_scale: usize,
    /// Also write the posterior draws of each comparison as `DIR/<subset>.csv`.
    #[arg(long, value_name = "DIR")]
    pub draws_dir: Option<PathBuf>,
}

/// Reads a scores file (file:line errors; no records is bad input): its rows and its side of the
/// comparison document.
fn read_scores(path: &Path) -> Result<(Vec<ScoreRow>, CompareSide)> {
    let file = toxdrift::records::read_scores_file(path)?;
    let side = CompareSide {
        path: Some(path.display().to_string()),
        model: file.model,
        n: file.rows.len(),
    };
    Ok((file.rows, side))
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let rope = match args.rope.as_deref() {
        None => None,
        Some([lo, hi]) => Some([*lo, *hi]),
        Some(_) => return Err(Error::BadInput("--rope takes two numbers: LOW HIGH".into())),
    };
    // The same BEST settings as a study's `[sampler]` (one place builds the parameters).
    let sampler = toxdrift::study::SamplerSpec {
        chains: args.chains,
        tune: args.tune,
        draws: args.draws,
        seed: args.seed,
        priors: args.priors,
        hdi_mass: args.hdi_prob,
        rope,
        rhat_max: args.rhat_max,
        ess_min: args.ess_min,
        max_divergences: args.max_divergences,
        retry_scale: args.retry_scale,
    };
    // Reject bad settings before reading anything large.
    toxdrift::best_params(&sampler).check()?;

    let (base, base_side) = read_scores(&args.baseline)?;
    let (cand, cand_side) = read_scores(&args.candidate)?;

    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:>12} {pos} subsets done, {elapsed} elapsed")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut started = false;
    let compared = build_comparison(base_side, cand_side, &base, &cand, &sampler, |name| {
        if started {
            bar.inc(1);
        }
        started = true;
        bar.set_message(name.to_string());
    });
    bar.finish_and_clear();
    let Compared {
        doc,
        fits,
        input_warnings,
    } = compared.map_err(|e| super::name_pair(e, &args.baseline, &args.candidate))?;
    if let Some(dir) = &args.draws_dir {
        for (name, fit) in &fits {
            let mut buf = Vec::new();
            fit.write_csv(&mut buf)?;
            toxdrift::io::write_atomic(dir.join(format!("{name}.csv")), &buf)?;
        }
    }
    // The terminal gets the input's warnings and one line for the sampler; the file has all.
    for w in &input_warnings {
        tracing::warn!("{w}");
    }
    let name = |side: &CompareSide, path: &Path| {
        side.model
            .clone()
            .unwrap_or_else(|| path.display().to_string())
    };
    let result = doc.pair_result(
        &name(&doc.baseline, &args.baseline),
        &name(&doc.candidate, &args.candidate),
    );
    if let Some(line) = result.diagnostics_line() {
        tracing::warn!("{line} (every warning is in {})", args.out.display());
    }
    let mut bytes = serde_json::to_vec_pretty(&doc)
        .map_err(|e| Error::io(&args.out, std::io::Error::other(e)))?;
    bytes.push(b'\n');
    toxdrift::io::write_atomic(&args.out, &bytes)?;
    println!("{}", summary(&result, args.hdi_prob, &args.out));
    Ok(())
}

/// What `compare` prints on stdout: the pair's summary line on all prompts, then the direction
/// of the differences and where the details are.
fn summary(result: &toxdrift::report::PairResult, hdi_prob: f64, out: &Path) -> String {
    format!(
        "{}\nDifferences are candidate − baseline (toxic rates in percentage points); every subset, \
         the BEST summaries and their diagnostics are in {}.",
        result.summary_line(hdi_prob),
        out.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, rows: &[(String, &str, f64)]) -> PathBuf {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        for (id, subset, score) in rows {
            let rec = serde_json::json!({
                "id": id, "subset": subset, "model": name, "score": score, "toxic": *score >= 0.5,
            });
            writeln!(f, "{rec}").unwrap();
        }
        path
    }

    fn rows(
        prefix: &str,
        subset: &'static str,
        n: usize,
        shift: f64,
        toxic_every: usize,
    ) -> Vec<(String, &'static str, f64)> {
        (0..n)
            .map(|i| {
                let s = if i % toxic_every == 0 {
                    0.9
                } else {
                    shift + 0.001 * ((i * 37 % 101) as f64) / 101.0
                };
                (format!("{prefix}-{subset}-{i}"), subset, s)
            })
            .collect()
    }

    fn args(dir: &Path, baseline: PathBuf, candidate: PathBuf) -> Args {
        Args {
            baseline,
            candidate,
            out: dir.join("out").join("cmp.json"),
            chains: 2,
            tune: 200,
            draws: 200,
            seed: 5,
            priors: Priors::Paper,
            hdi_prob: 0.95,
            rope: Some(vec![-0.001, 0.001]),
            rhat_max: 1.01,
            ess_min: 400.0,
            max_divergences: 0,
            retry_scale: 4,
            draws_dir: Some(dir.join("draws")),
        }
    }

    #[test]
    fn compares_per_subset_and_overall() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = rows("a", "random", 200, 0.010, 20);
        a.extend(rows("a", "severe", 150, 0.020, 10));
        a.extend(rows("a", "race", 30, 0.01, 10));
        let mut b = rows("b", "random", 180, 0.012, 10);
        b.extend(rows("b", "severe", 150, 0.021, 5));
        let (pa, pb) = (
            write(dir.path(), "a.jsonl", &a),
            write(dir.path(), "b.jsonl", &b),
        );
        let args = args(dir.path(), pa, pb);
        let out = args.out.clone();
        run(args).unwrap();
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let cmp = &r["comparisons"];
        let keys: Vec<&str> = cmp
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["all", "random", "severe"]);
        assert_eq!(cmp["all"]["n_baseline"], 380);
        assert_eq!(cmp["all"]["n_candidate"], 330);
        assert_eq!(cmp["random"]["n_candidate"], 180);
        assert_eq!(r["baseline"]["model"], "a.jsonl");
        assert!(r["warnings"].as_array().unwrap().iter().any(|w| {
            w.as_str()
                .unwrap()
                .contains("`race` is only in the baseline")
        }));
        // mu_candidate - mu_baseline is positive on `random` (shift 0.010 vs 0.012).
        assert_eq!(r["settings"]["difference"], "candidate - baseline");
        let mu = &cmp["random"]["best"]["mu_diff"];
        assert!(mu["hdi_low"].as_f64().unwrap() > 0.0, "{mu}");
        // A verdict (and a ROPE decision) only where the sampler converged.
        let best = &cmp["random"]["best"];
        if best["converged"] == true {
            assert_eq!(best["credible"], true);
            assert!(best["rope"]["decision"].is_string());
        } else {
            assert!(best["credible"].is_null() && best["rope"]["decision"].is_null());
        }
        assert!(best["convergence"]["ess_bulk"].as_f64().unwrap() > 0.0);
        // The rate part is the closed-form comparison of the toxic counts.
        let want = best_mcmc::compare_rates(10, 200, 18, 180, 0.95).unwrap();
        let rate = &cmp["random"]["rate"];
        assert_eq!(rate["k_baseline"], 10);
        // (serde_json's default float parsing may be 1 ulp off.)
        assert!(
            (rate["rate_diff"]["hdi_low"].as_f64().unwrap() - want.rate_diff.hdi_low).abs() < 1e-15
        );
        assert!(
            (rate["p_candidate_higher"].as_f64().unwrap() - want.p_candidate_higher).abs() < 1e-15
        );
        for q in ["rhat", "ess_bulk", "ess_tail", "mcse_mean"] {
            assert!(mu["diagnostics"][q].as_f64().unwrap().is_finite(), "{q}");
        }
        let csv = std::fs::read_to_string(dir.path().join("draws").join("severe.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 2 * 200);
    }

    #[test]
    fn bad_files_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = rows("g", "random", 50, 0.01, 10);
        g.extend(rows("g", "severe", 20, 0.02, 10));
        let good = write(dir.path(), "good.jsonl", &g);
        let cases: [(&str, &str); 5] = [
            (
                "{\"id\":\"x\",\"subset\":\"random\",\"score\":0.1}\n",
                "missing key `toxic`",
            ),
            (
                "{\"id\":\"x\",\"subset\":\"random\",\"score\":1.5,\"toxic\":true}\n",
                "not a probability",
            ),
            (
                "{\"id\":\"x\",\"subset\":\"random\",\"score\":0.1,\"toxic\":false}\n{\"id\":\"x\",\"subset\":\"random\",\"score\":0.2,\"toxic\":false}\n",
                "duplicate id",
            ),
            (
                "{\"id\":\"x\",\"subset\":\"random\",\"score\":null,\"toxic\":false}\n",
                "`score` is not a number",
            ),
            ("not json\n", "not valid JSON"),
        ];
        for (i, (text, msg)) in cases.iter().enumerate() {
            let bad = dir.path().join(format!("bad{i}.jsonl"));
            std::fs::write(&bad, text).unwrap();
            let e = run(args(dir.path(), good.clone(), bad.clone())).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            let s = e.to_string();
            assert!(
                s.contains(&format!("bad{i}.jsonl:")) && s.contains(msg),
                "{s}"
            );
        }
        // A constant subset is reported not fitted, with its name, and the rest is compared.
        let mut constant = rows("c", "random", 50, 0.01, 10);
        constant.extend((0..20).map(|i| (format!("c{i}"), "severe", 0.25)));
        let c = write(dir.path(), "const.jsonl", &constant);
        let a = args(dir.path(), good.clone(), c);
        let out = a.out.clone();
        run(a).unwrap();
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let severe = &r["comparisons"]["severe"];
        assert!(severe.get("best").is_none(), "{severe}");
        assert!(
            severe["not_fitted"]
                .as_str()
                .unwrap()
                .contains("zero spread"),
            "{severe}"
        );
        assert_eq!(severe["n_candidate"], 20);
        assert!(r["comparisons"]["random"]["best"]["mu_diff"]["mean"].is_f64());
        assert!(
            r["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| { w.as_str().unwrap().contains("subset `severe` not fitted") })
        );
        std::fs::remove_file(&out).unwrap();
        // A file without records is bad input, named.
        let empty = dir.path().join("empty.jsonl");
        std::fs::write(&empty, "").unwrap();
        for (b, c) in [(good.clone(), empty.clone()), (empty.clone(), good.clone())] {
            let e = run(args(dir.path(), b, c)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(
                e.to_string().contains("empty.jsonl: no scored records"),
                "{e}"
            );
        }
        assert!(!out.exists());
        // Bad settings are refused before reading.
        let mut a = args(dir.path(), good.clone(), good);
        a.hdi_prob = 1.5;
        assert_eq!(run(a).unwrap_err().exit_code(), 2);
        assert!(!dir.path().join("out").join("cmp.json").exists());
    }
}
