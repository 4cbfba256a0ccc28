//! The No-U-Turn sampler (multinomial, generalised U-turn criterion as in Stan >= 2.26) with a
//! diagonal Euclidean metric, dual-averaging step size adaptation and windowed metric adaptation.
//!
//! Warm-up follows Stan's schedule (an initial buffer, doubling slow windows, a terminal
//! buffer; step size restarted after each window). The diagonal metric of each window is
//! `sqrt(Var(theta) / Var(grad log p))` (the estimator nutpie uses, Seyboldt 2023), exact for
//! Gaussian targets and usable from few draws; it starts from `1 / |grad log p|` at the initial
//! point, and during the first 100 draws of every slow window it is refreshed every 10 draws
//! from the window so far (as PyMC and nutpie adapt continuously early on). This halves the
//! gradient evaluations of warm-up on the BEST model, and a window that starts from a metric
//! spoiled by a transient (a chain still travelling to the typical set) recovers within tens of
//! draws instead of running hundreds of maximum-depth trees until the window ends. Stan's own variance estimator, shrunk towards 1e-3, would be dominated by that
//! shrinkage here: the location parameters of toxicity scores have posterior sds near 1e-4.

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, StandardNormal};

/// A differentiable log density on R^D.
pub(crate) trait LogDensity<const D: usize>: Sync {
    /// Log density at `x`, its gradient written to `grad`.
    fn logp_grad(&self, x: &[f64; D], grad: &mut [f64; D]) -> f64;
}

/// Sampler settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NutsSettings {
    pub tune: usize,
    pub draws: usize,
    pub target_accept: f64,
    pub max_depth: usize,
    pub max_energy_error: f64,
}

/// What one chain produced.
#[derive(Debug, Clone)]
pub(crate) struct ChainOutput<const D: usize> {
    /// Kept draws (unconstrained), one per iteration after tuning.
    pub draws: Vec<[f64; D]>,
    /// Divergent transitions among the kept draws.
    pub divergences: usize,
    /// Divergent transitions during tuning.
    pub tune_divergences: usize,
    /// Final step size.
    pub step_size: f64,
    /// Mean tree depth of kept draws.
    pub mean_tree_depth: f64,
    /// Leapfrog steps (gradient evaluations) over the whole run, tuning included.
    pub n_leapfrog: u64,
    /// Leapfrog steps during tuning (step-size searches included).
    pub n_leapfrog_tune: u64,
    /// Transitions that hit the maximum tree depth (kept draws).
    pub max_depth_hits: usize,
    /// Energy of each kept draw (for E-BFMI).
    pub energy: Vec<f64>,
    /// Final inverse metric (diagonal).
    pub inv_metric: [f64; D],
    /// Mean acceptance statistic of kept draws.
    pub mean_accept: f64,
}

#[derive(Clone, Copy)]
struct State<const D: usize> {
    q: [f64; D],
    p: [f64; D],
    grad: [f64; D],
    logp: f64,
}

struct Sampler<'a, const D: usize, L: LogDensity<D>> {
    target: &'a L,
    minv: [f64; D],
    eps: f64,
    max_depth: usize,
    max_energy_error: f64,
    rng: Xoshiro256PlusPlus,
    n_leapfrog: u64,
    divergent: bool,
}

#[derive(Default, Clone, Copy)]
struct TransitionInfo {
    accept: f64,
    depth: usize,
    divergent: bool,
    energy: f64,
}

fn dot<const D: usize>(a: &[f64; D], b: &[f64; D]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn add<const D: usize>(a: &[f64; D], b: &[f64; D]) -> [f64; D] {
    std::array::from_fn(|i| a[i] + b[i])
}

fn log_sum_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

fn criterion<const D: usize>(
    p_sharp_minus: &[f64; D],
    p_sharp_plus: &[f64; D],
    rho: &[f64; D],
) -> bool {
    dot(p_sharp_plus, rho) > 0.0 && dot(p_sharp_minus, rho) > 0.0
}

impl<'a, const D: usize, L: LogDensity<D>> Sampler<'a, D, L> {
    fn hamiltonian(&self, z: &State<D>) -> f64 {
        let k: f64 = (0..D).map(|i| self.minv[i] * z.p[i] * z.p[i]).sum();
        let h = -z.logp + 0.5 * k;
        if h.is_nan() { f64::INFINITY } else { h }
    }

    fn p_sharp(&self, p: &[f64; D]) -> [f64; D] {
        std::array::from_fn(|i| self.minv[i] * p[i])
    }

    fn sample_momentum(&mut self, z: &mut State<D>) {
        for i in 0..D {
            let n: f64 = StandardNormal.sample(&mut self.rng);
            z.p[i] = n / self.minv[i].sqrt();
        }
    }

    fn leapfrog(&mut self, z: &mut State<D>, eps: f64) {
        self.n_leapfrog += 1;
        for i in 0..D {
            z.p[i] += 0.5 * eps * z.grad[i];
        }
        for i in 0..D {
            z.q[i] += eps * self.minv[i] * z.p[i];
        }
        z.logp = self.target.logp_grad(&z.q, &mut z.grad);
        if !z.logp.is_finite() || z.grad.iter().any(|g| !g.is_finite()) {
            z.logp = f64::NEG_INFINITY;
            return;
        }
        for i in 0..D {
            z.p[i] += 0.5 * eps * z.grad[i];
        }
    }

    /// Stan's step-size heuristic: double or halve until the one-step acceptance crosses 0.8.
    fn init_step_size(&mut self, z0: &State<D>) -> Result<(), String> {
        let mut z = *z0;
        self.sample_momentum(&mut z);
        let h0 = self.hamiltonian(&z);
        let eps = self.eps;
        self.leapfrog(&mut z, eps);
        let dh = h0 - self.hamiltonian(&z);
        let direction = if dh > 0.8f64.ln() { 1 } else { -1 };
        loop {
            let mut z = *z0;
            self.sample_momentum(&mut z);
            let h0 = self.hamiltonian(&z);
            let eps = self.eps;
            self.leapfrog(&mut z, eps);
            let dh = h0 - self.hamiltonian(&z);
            // NaN counts as "crossed" in both directions, as in Stan.
            let above = dh > 0.8f64.ln();
            let below = dh < 0.8f64.ln();
            if (direction == 1 && !above) || (direction == -1 && !below) {
                break;
            }
            self.eps = if direction == 1 {
                2.0 * self.eps
            } else {
                0.5 * self.eps
            };
            if self.eps > 1e7 {
                return Err("step size grew past 1e7: is the posterior improper?".into());
            }
            if self.eps < 1e-300 {
                return Err(
                    "step size fell to 0: the log density is not differentiable here".into(),
                );
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn build_tree(
        &mut self,
        z: &mut State<D>,
        depth: usize,
        z_propose: &mut State<D>,
        p_sharp_beg: &mut [f64; D],
        p_sharp_end: &mut [f64; D],
        rho: &mut [f64; D],
        p_beg: &mut [f64; D],
        p_end: &mut [f64; D],
        h0: f64,
        sign: f64,
        log_sum_weight: &mut f64,
        sum_metro_prob: &mut f64,
        n_steps: &mut u64,
    ) -> bool {
        if depth == 0 {
            let eps = sign * self.eps;
            self.leapfrog(z, eps);
            *n_steps += 1;
            let h = self.hamiltonian(z);
            if h - h0 > self.max_energy_error {
                self.divergent = true;
            }
            *log_sum_weight = log_sum_exp(*log_sum_weight, h0 - h);
            *sum_metro_prob += if h0 - h > 0.0 { 1.0 } else { (h0 - h).exp() };
            *z_propose = *z;
            *p_sharp_beg = self.p_sharp(&z.p);
            *p_sharp_end = *p_sharp_beg;
            *rho = add(rho, &z.p);
            *p_beg = z.p;
            *p_end = z.p;
            return !self.divergent;
        }
        let mut lsw_init = f64::NEG_INFINITY;
        let mut p_init_end = [0.0; D];
        let mut p_sharp_init_end = [0.0; D];
        let mut rho_init = [0.0; D];
        let valid_init = self.build_tree(
            z,
            depth - 1,
            z_propose,
            p_sharp_beg,
            &mut p_sharp_init_end,
            &mut rho_init,
            p_beg,
            &mut p_init_end,
            h0,
            sign,
            &mut lsw_init,
            sum_metro_prob,
            n_steps,
        );
        if !valid_init {
            return false;
        }
        let mut z_propose_final = *z;
        let mut lsw_final = f64::NEG_INFINITY;
        let mut p_final_beg = [0.0; D];
        let mut p_sharp_final_beg = [0.0; D];
        let mut rho_final = [0.0; D];
        let valid_final = self.build_tree(
            z,
            depth - 1,
            &mut z_propose_final,
            &mut p_sharp_final_beg,
            p_sharp_end,
            &mut rho_final,
            &mut p_final_beg,
            p_end,
            h0,
            sign,
            &mut lsw_final,
            sum_metro_prob,
            n_steps,
        );
        if !valid_final {
            return false;
        }
        let lsw_subtree = log_sum_exp(lsw_init, lsw_final);
        *log_sum_weight = log_sum_exp(*log_sum_weight, lsw_subtree);
        if lsw_final > lsw_subtree {
            *z_propose = z_propose_final;
        } else {
            let accept = (lsw_final - lsw_subtree).exp();
            if self.rng.random::<f64>() < accept {
                *z_propose = z_propose_final;
            }
        }
        let rho_subtree = add(&rho_init, &rho_final);
        *rho = add(rho, &rho_subtree);
        let mut persist = criterion(p_sharp_beg, p_sharp_end, &rho_subtree);
        let rho_ext = add(&rho_init, &p_final_beg);
        persist &= criterion(p_sharp_beg, &p_sharp_final_beg, &rho_ext);
        let rho_ext = add(&rho_final, &p_init_end);
        persist &= criterion(&p_sharp_init_end, p_sharp_end, &rho_ext);
        persist
    }

    fn transition(&mut self, z0: &mut State<D>) -> TransitionInfo {
        self.sample_momentum(z0);
        self.divergent = false;
        let h0 = self.hamiltonian(z0);
        let mut z_fwd = *z0;
        let mut z_bck = *z0;
        let mut z_sample = *z0;
        let mut z_propose = *z0;
        let mut p_fwd_fwd = z0.p;
        let mut p_sharp_fwd_fwd = self.p_sharp(&z0.p);
        let mut p_fwd_bck = z0.p;
        let mut p_sharp_fwd_bck = p_sharp_fwd_fwd;
        let mut p_bck_fwd = z0.p;
        let mut p_sharp_bck_fwd = p_sharp_fwd_fwd;
        let mut p_bck_bck = z0.p;
        let mut p_sharp_bck_bck = p_sharp_fwd_fwd;
        let mut rho = z0.p;
        let mut log_sum_weight = 0.0;
        let mut sum_metro_prob = 0.0;
        let mut n_steps = 0u64;
        let mut depth = 0;
        while depth < self.max_depth {
            let mut rho_fwd = [0.0; D];
            let mut rho_bck = [0.0; D];
            let mut lsw_subtree = f64::NEG_INFINITY;
            let valid;
            if self.rng.random::<f64>() > 0.5 {
                let mut z = z_fwd;
                rho_bck = rho;
                p_bck_fwd = p_fwd_bck;
                p_sharp_bck_fwd = p_sharp_fwd_bck;
                valid = self.build_tree(
                    &mut z,
                    depth,
                    &mut z_propose,
                    &mut p_sharp_fwd_bck,
                    &mut p_sharp_fwd_fwd,
                    &mut rho_fwd,
                    &mut p_fwd_bck,
                    &mut p_fwd_fwd,
                    h0,
                    1.0,
                    &mut lsw_subtree,
                    &mut sum_metro_prob,
                    &mut n_steps,
                );
                z_fwd = z;
            } else {
                let mut z = z_bck;
                rho_fwd = rho;
                p_fwd_bck = p_bck_fwd;
                p_sharp_fwd_bck = p_sharp_bck_fwd;
                valid = self.build_tree(
                    &mut z,
                    depth,
                    &mut z_propose,
                    &mut p_sharp_bck_fwd,
                    &mut p_sharp_bck_bck,
                    &mut rho_bck,
                    &mut p_bck_fwd,
                    &mut p_bck_bck,
                    h0,
                    -1.0,
                    &mut lsw_subtree,
                    &mut sum_metro_prob,
                    &mut n_steps,
                );
                z_bck = z;
            }
            if !valid {
                break;
            }
            depth += 1;
            if lsw_subtree > log_sum_weight {
                z_sample = z_propose;
            } else {
                let accept = (lsw_subtree - log_sum_weight).exp();
                if self.rng.random::<f64>() < accept {
                    z_sample = z_propose;
                }
            }
            log_sum_weight = log_sum_exp(log_sum_weight, lsw_subtree);
            rho = add(&rho_bck, &rho_fwd);
            let mut persist = criterion(&p_sharp_bck_bck, &p_sharp_fwd_fwd, &rho);
            let rho_ext = add(&rho_bck, &p_fwd_bck);
            persist &= criterion(&p_sharp_bck_bck, &p_sharp_fwd_bck, &rho_ext);
            let rho_ext = add(&rho_fwd, &p_bck_fwd);
            persist &= criterion(&p_sharp_bck_fwd, &p_sharp_fwd_fwd, &rho_ext);
            if !persist {
                break;
            }
        }
        *z0 = z_sample;
        let energy = self.hamiltonian(z0);
        TransitionInfo {
            accept: if n_steps > 0 {
                sum_metro_prob / n_steps as f64
            } else {
                0.0
            },
            depth,
            divergent: self.divergent,
            energy,
        }
    }
}

/// Nesterov dual averaging of the log step size (Hoffman & Gelman 2014, Stan's constants).
struct DualAveraging {
    mu: f64,
    target: f64,
    counter: f64,
    s_bar: f64,
    x_bar: f64,
}

impl DualAveraging {
    const GAMMA: f64 = 0.05;
    const T0: f64 = 10.0;
    const KAPPA: f64 = 0.75;

    fn new(eps: f64, target: f64) -> Self {
        Self {
            mu: (10.0 * eps).ln(),
            target,
            counter: 0.0,
            s_bar: 0.0,
            x_bar: 0.0,
        }
    }

    fn update(&mut self, accept: f64) -> f64 {
        self.counter += 1.0;
        let accept = accept.min(1.0);
        let eta = 1.0 / (self.counter + Self::T0);
        self.s_bar = (1.0 - eta) * self.s_bar + eta * (self.target - accept);
        let x = self.mu - self.s_bar * self.counter.sqrt() / Self::GAMMA;
        let x_eta = self.counter.powf(-Self::KAPPA);
        self.x_bar = (1.0 - x_eta) * self.x_bar + x_eta * x;
        x.exp()
    }

    fn final_step(&self) -> f64 {
        self.x_bar.exp()
    }
}

/// Welford accumulators for the draws and the gradients of one window.
struct MetricWindow<const D: usize> {
    n: f64,
    mean_q: [f64; D],
    m2_q: [f64; D],
    mean_g: [f64; D],
    m2_g: [f64; D],
}

impl<const D: usize> MetricWindow<D> {
    fn new() -> Self {
        Self {
            n: 0.0,
            mean_q: [0.0; D],
            m2_q: [0.0; D],
            mean_g: [0.0; D],
            m2_g: [0.0; D],
        }
    }

    fn add(&mut self, q: &[f64; D], g: &[f64; D]) {
        self.n += 1.0;
        for i in 0..D {
            let d = q[i] - self.mean_q[i];
            self.mean_q[i] += d / self.n;
            self.m2_q[i] += d * (q[i] - self.mean_q[i]);
            let d = g[i] - self.mean_g[i];
            self.mean_g[i] += d / self.n;
            self.m2_g[i] += d * (g[i] - self.mean_g[i]);
        }
    }

    /// sqrt(Var q / Var g), clamped; `None` when the window is too short.
    fn estimate(&self) -> Option<[f64; D]> {
        if self.n < 3.0 {
            return None;
        }
        Some(std::array::from_fn(|i| {
            let vq = self.m2_q[i] / (self.n - 1.0);
            let vg = self.m2_g[i] / (self.n - 1.0);
            let m = (vq / vg).sqrt();
            if m.is_finite() && m > 0.0 {
                m.clamp(1e-20, 1e20)
            } else {
                1.0
            }
        }))
    }
}

/// End iterations (exclusive) of the slow metric windows, Stan's schedule.
fn window_ends(tune: usize) -> (usize, Vec<usize>) {
    let (mut init, mut term, mut base) = (75usize, 50usize, 25usize);
    if tune < 20 {
        return (tune, Vec::new());
    }
    if init + term + base > tune {
        init = (0.15 * tune as f64) as usize;
        term = (0.1 * tune as f64) as usize;
        base = tune - init - term;
    }
    let slow_end = tune - term;
    let mut ends = Vec::new();
    let mut start = init;
    let mut w = base;
    loop {
        let mut end = start + w;
        if end + 2 * w > slow_end {
            end = slow_end;
        }
        ends.push(end);
        if end >= slow_end {
            break;
        }
        start = end;
        w *= 2;
    }
    (init, ends)
}

/// Runs one chain from `init` (an unconstrained point with finite log density).
pub(crate) fn run_chain<const D: usize, L: LogDensity<D>>(
    target: &L,
    init: [f64; D],
    settings: &NutsSettings,
    rng: Xoshiro256PlusPlus,
) -> Result<ChainOutput<D>, String> {
    let mut grad = [0.0; D];
    let logp = target.logp_grad(&init, &mut grad);
    if !logp.is_finite() || grad.iter().any(|g| !g.is_finite()) {
        return Err("initial point has no finite log density".into());
    }
    // Initial metric from the gradient at the starting point.
    let minv: [f64; D] = std::array::from_fn(|i| {
        let a = grad[i].abs();
        if a.is_finite() && a > 0.0 {
            (1.0 / a).clamp(1e-20, 1e20)
        } else {
            1.0
        }
    });
    let mut s = Sampler {
        target,
        minv,
        eps: 1.0,
        max_depth: settings.max_depth,
        max_energy_error: settings.max_energy_error,
        rng,
        n_leapfrog: 0,
        divergent: false,
    };
    let mut z = State {
        q: init,
        p: [0.0; D],
        grad,
        logp,
    };
    s.init_step_size(&z)?;
    let mut da = DualAveraging::new(s.eps, settings.target_accept);
    let (init_buffer, ends) = window_ends(settings.tune);
    let mut next_end = 0usize;
    let mut window = MetricWindow::new();
    let mut tune_divergences = 0;
    for it in 0..settings.tune {
        let info = s.transition(&mut z);
        tune_divergences += info.divergent as usize;
        s.eps = da.update(info.accept);
        if it >= init_buffer && next_end < ends.len() {
            window.add(&z.q, &z.grad);
            // Early in each window, also refresh the metric every 10 draws: the gradient-based
            // estimate is usable from a handful of draws and saves deep trees under a bad metric.
            if (window.n as usize).is_multiple_of(10)
                && window.n <= 100.0
                && let Some(m) = window.estimate()
            {
                s.minv = m;
            }
            if it + 1 == ends[next_end] {
                if let Some(m) = window.estimate() {
                    s.minv = m;
                }
                window = MetricWindow::new();
                next_end += 1;
                s.init_step_size(&z)?;
                da = DualAveraging::new(s.eps, settings.target_accept);
            }
        }
    }
    if settings.tune > 0 {
        s.eps = da.final_step();
    }
    let n_leapfrog_tune = s.n_leapfrog;
    let mut out = ChainOutput {
        draws: Vec::with_capacity(settings.draws),
        divergences: 0,
        tune_divergences,
        step_size: s.eps,
        mean_tree_depth: 0.0,
        n_leapfrog: 0,
        n_leapfrog_tune,
        max_depth_hits: 0,
        energy: Vec::with_capacity(settings.draws),
        inv_metric: s.minv,
        mean_accept: 0.0,
    };
    let mut depth_sum = 0.0;
    let mut accept_sum = 0.0;
    for _ in 0..settings.draws {
        let info = s.transition(&mut z);
        out.draws.push(z.q);
        out.energy.push(info.energy);
        out.divergences += info.divergent as usize;
        out.max_depth_hits += (info.depth >= settings.max_depth) as usize;
        depth_sum += info.depth as f64;
        accept_sum += info.accept;
    }
    let nd = settings.draws.max(1) as f64;
    out.mean_tree_depth = depth_sum / nd;
    out.mean_accept = accept_sum / nd;
    out.n_leapfrog = s.n_leapfrog;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    struct Gauss {
        sd: [f64; 3],
    }
    impl LogDensity<3> for Gauss {
        fn logp_grad(&self, x: &[f64; 3], g: &mut [f64; 3]) -> f64 {
            let mut lp = 0.0;
            for i in 0..3 {
                let z = x[i] / self.sd[i];
                lp -= 0.5 * z * z;
                g[i] = -z / self.sd[i];
            }
            lp
        }
    }

    #[test]
    fn windows_match_stan() {
        assert_eq!(window_ends(1000), (75, vec![100, 150, 250, 450, 950]));
        let (init, ends) = window_ends(100);
        assert_eq!(init, 15);
        assert_eq!(*ends.last().unwrap(), 90);
    }

    #[test]
    fn samples_a_badly_scaled_gaussian() {
        let target = Gauss {
            sd: [1e-4, 1.0, 30.0],
        };
        let settings = NutsSettings {
            tune: 500,
            draws: 4000,
            target_accept: 0.8,
            max_depth: 10,
            max_energy_error: 1000.0,
        };
        let out = run_chain(
            &target,
            [0.1, 1.0, -3.0],
            &settings,
            Xoshiro256PlusPlus::seed_from_u64(3),
        )
        .unwrap();
        assert_eq!(out.divergences, 0);
        for i in 0..3 {
            let n = out.draws.len() as f64;
            let m = out.draws.iter().map(|d| d[i]).sum::<f64>() / n;
            let v = out.draws.iter().map(|d| (d[i] - m).powi(2)).sum::<f64>() / (n - 1.0);
            let sd = v.sqrt();
            assert!(
                (sd / target.sd[i] - 1.0).abs() < 0.1,
                "coordinate {i}: sd {sd}"
            );
            assert!(m.abs() < 0.1 * target.sd[i], "coordinate {i}: mean {m}");
            // The adapted metric recovers the variances.
            assert!((out.inv_metric[i] / target.sd[i].powi(2) - 1.0).abs() < 0.3);
        }
    }
}
