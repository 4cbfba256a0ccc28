//! `toxdrift compare`: BEST and the toxic-rate comparison of two scored files, per subset and
//! over all prompts, written as one JSON file (design.md §3). Differences are baseline − candidate.

use best_mcmc::{BestSummary, RateSummary, compare_rates};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toxdrift::error::{Error, Result};

/// Prior sets selectable on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorsArg {
    /// mu ~ Normal(0, 1), sigma ~ HalfCauchy(10), nu − 1 ~ Exponential(1/29) (the paper's).
    Paper,
    /// Kruschke's data-scaled priors.
    Kruschke,
}

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
    #[arg(long, default_value_t = 4)]
    pub chains: usize,
    /// Tuning iterations per chain.
    #[arg(long, default_value_t = 1000)]
    pub tune: usize,
    /// Kept draws per chain.
    #[arg(long, default_value_t = 1000)]
    pub draws: usize,
    /// Random seed (the same for every subset).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prior set.
    #[arg(long, value_enum, default_value_t = PriorsArg::Paper)]
    pub priors: PriorsArg,
    /// Mass of the highest-density intervals.
    #[arg(long, default_value_t = 0.95)]
    pub hdi_prob: f64,
    /// Region of practical equivalence for mu_baseline − mu_candidate, e.g. `--rope -0.005 0.005`.
    #[arg(long, num_args = 2, value_names = ["LOW", "HIGH"], allow_negative_numbers = true)]
    pub rope: Option<Vec<f64>>,
    /// Also write the posterior draws of each comparison as `DIR/<subset>.csv`.
    #[arg(long, value_name = "DIR")]
    pub draws_dir: Option<PathBuf>,
}

/// One scored file, grouped by subset.
struct Scores {
    model: Option<String>,
    subsets: BTreeMap<String, (Vec<f64>, u64)>,
    n: usize,
}

/// Reads a scores file (file:line errors from [`toxdrift::records::read_scores`]) and groups it.
fn read_scores(path: &Path) -> Result<Scores> {
    let lines = toxdrift::records::read_scores(path)?;
    if lines.is_empty() {
        return Err(Error::BadInput(format!(
            "{}: no scored records",
            path.display()
        )));
    }
    let mut subsets: BTreeMap<String, (Vec<f64>, u64)> = BTreeMap::new();
    let mut model: Option<String> = None;
    for l in &lines {
        if model.is_none() && !l.model.is_empty() {
            model = Some(l.model.clone());
        }
        let entry = subsets.entry(l.subset.clone()).or_default();
        entry.0.push(l.score);
        entry.1 += l.toxic as u64;
    }
    Ok(Scores {
        model,
        subsets,
        n: lines.len(),
    })
}

#[derive(Serialize)]
struct Side {
    path: String,
    model: Option<String>,
    n: usize,
}

#[derive(Serialize)]
struct Settings {
    chains: usize,
    tune: usize,
    draws: usize,
    seed: u64,
    priors: PriorsArg,
    hdi_prob: f64,
    rope: Option<[f64; 2]>,
    difference: &'static str,
    sampler: &'static str,
}

#[derive(Serialize)]
struct SubsetComparison {
    n_baseline: usize,
    n_candidate: usize,
    best: BestSummary,
    rate: RateSummary,
}

#[derive(Serialize)]
struct Report {
    baseline: Side,
    candidate: Side,
    settings: Settings,
    comparisons: BTreeMap<String, SubsetComparison>,
    warnings: Vec<String>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let rope = match args.rope.as_deref() {
        None => None,
        Some([lo, hi]) => Some([*lo, *hi]),
        Some(_) => return Err(Error::BadInput("--rope takes two numbers: LOW HIGH".into())),
    };
    // The same BEST settings as a study's `[sampler]` (one place builds the parameters).
    let params = toxdrift::stages::best_params(&toxdrift::study::SamplerSpec {
        chains: args.chains,
        tune: args.tune,
        draws: args.draws,
        seed: args.seed,
        priors: match args.priors {
            PriorsArg::Paper => toxdrift::study::Priors::Paper,
            PriorsArg::Kruschke => toxdrift::study::Priors::Kruschke,
        },
        hdi_mass: args.hdi_prob,
        rope,
    });
    // Reject bad settings before reading anything large.
    params.check()?;

    let base = read_scores(&args.baseline)?;
    let cand = read_scores(&args.candidate)?;
    let mut warnings = Vec::new();
    // (subset, baseline scores, baseline toxic count, candidate scores, candidate toxic count)
    type Pair = (String, Vec<f64>, u64, Vec<f64>, u64);
    let mut pairs: Vec<Pair> = Vec::new();
    let all = |s: &Scores| -> (Vec<f64>, u64) {
        let mut y = Vec::with_capacity(s.n);
        let mut k = 0;
        for (v, t) in s.subsets.values() {
            y.extend_from_slice(v);
            k += t;
        }
        (y, k)
    };
    let (ya, ka) = all(&base);
    let (yb, kb) = all(&cand);
    pairs.push(("all".into(), ya, ka, yb, kb));
    for (name, (ya, ka)) in &base.subsets {
        match cand.subsets.get(name) {
            Some((yb, kb)) => pairs.push((name.clone(), ya.clone(), *ka, yb.clone(), *kb)),
            None => warnings.push(format!(
                "subset `{name}` is only in the baseline file: not compared"
            )),
        }
    }
    for name in cand.subsets.keys() {
        if !base.subsets.contains_key(name) {
            warnings.push(format!(
                "subset `{name}` is only in the candidate file: not compared"
            ));
        }
    }
    if warnings.iter().any(|w| w.contains("only in")) {
        warnings.push(
            "`all` pools every record of each file, including subsets not in the other".into(),
        );
    }

    let bar = ProgressBar::new(pairs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {pos}/{len} subsets, {elapsed} elapsed, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut comparisons = BTreeMap::new();
    for (name, ya, ka, yb, kb) in pairs {
        bar.set_message(name.clone());
        let context = |e: best_mcmc::Error| -> Error {
            if e.is_bad_input() {
                Error::BadInput(format!(
                    "subset `{name}` ({} vs {}): {e}",
                    args.baseline.display(),
                    args.candidate.display()
                ))
            } else {
                Error::from(e)
            }
        };
        let fit = params.fit(&ya, &yb).map_err(context)?;
        let best = fit.summary();
        let rate = compare_rates(ka, ya.len() as u64, kb, yb.len() as u64, args.hdi_prob)
            .map_err(context)?;
        for w in &best.warnings {
            warnings.push(format!("{name}: {w}"));
        }
        if let Some(dir) = &args.draws_dir {
            let mut buf = Vec::new();
            fit.write_csv(&mut buf)?;
            toxdrift::io::write_atomic(dir.join(format!("{name}.csv")), &buf)?;
        }
        comparisons.insert(
            name,
            SubsetComparison {
                n_baseline: ya.len(),
                n_candidate: yb.len(),
                best,
                rate,
            },
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = Report {
        baseline: Side {
            path: args.baseline.display().to_string(),
            model: base.model,
            n: base.n,
        },
        candidate: Side {
            path: args.candidate.display().to_string(),
            model: cand.model,
            n: cand.n,
        },
        settings: Settings {
            chains: args.chains,
            tune: args.tune,
            draws: args.draws,
            seed: args.seed,
            priors: args.priors,
            hdi_prob: args.hdi_prob,
            rope,
            difference: "baseline - candidate",
            sampler: "best-mcmc NUTS (diagonal metric, Stan warm-up windows)",
        },
        comparisons,
        warnings,
    };
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    let mut bytes = serde_json::to_vec_pretty(&report)
        .map_err(|e| Error::io(&args.out, std::io::Error::other(e)))?;
    bytes.push(b'\n');
    toxdrift::io::write_atomic(&args.out, &bytes)
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
            priors: PriorsArg::Paper,
            hdi_prob: 0.95,
            rope: Some(vec![-0.001, 0.001]),
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
        // mu_baseline - mu_candidate is negative on `random` (shift 0.010 vs 0.012).
        let mu = &cmp["random"]["best"]["mu_diff"];
        assert!(mu["hdi_high"].as_f64().unwrap() < 0.0, "{mu}");
        assert_eq!(cmp["random"]["best"]["credible"], true);
        assert!(cmp["random"]["best"]["rope"]["decision"].is_string());
        // The rate part is the closed-form comparison of the toxic counts.
        let want = compare_rates(10, 200, 18, 180, 0.95).unwrap();
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
        // A constant subset is refused with its name.
        let mut constant = rows("c", "random", 50, 0.01, 10);
        constant.extend((0..20).map(|i| (format!("c{i}"), "severe", 0.25)));
        let c = write(dir.path(), "const.jsonl", &constant);
        let e = run(args(dir.path(), good.clone(), c)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("subset `severe`"), "{e}");
        // Bad settings are refused before reading.
        let mut a = args(dir.path(), good.clone(), good);
        a.hdi_prob = 1.5;
        assert_eq!(run(a).unwrap_err().exit_code(), 2);
        assert!(!dir.path().join("out").join("cmp.json").exists());
    }
}
