//! SVG figures of the report:
//!
//! - [`posteriors_svg`]: the posterior of mu(candidate) − mu(baseline) with its HDI, one panel
//!   per model pair, like the paper's Figures 1–4 (ArviZ's `plot_posterior`); a pair whose
//!   sampler did not converge is drawn greyed with "unreliable" and its figures, a pair BEST
//!   could not fit is a panel that says why.
//! - [`forest_svg`]: every comparison × subset's toxic-rate difference (candidate − baseline, in
//!   percentage points) with its HDI (`figures/summary.svg`).
//! - [`rates_svg`]: every model's toxic rate per subset with its HDI (`figures/rates.svg`).
//! - [`drift_svg`]: a fine-tune's toxic rate against the training step.
//!
//! The first three are written here by hand, so that every text is placed where it was
//! measured to fit: widths are estimated from DejaVu Sans Bold's advance widths (the widest of
//! the fonts asked for) plus 5%, and a title or label that does not fit is first shrunk, then
//! wrapped, never clipped. The output depends only on the input (no timestamps, fixed number
//! formatting), so a rerun writes the same bytes.

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::fmt::Write as _;

// ----- text measurement ------------------------------------------------------------------------

/// DejaVu Sans Bold advance widths of ASCII 32..=126, in thousandths of an em.
const ASCII_BOLD: [u16; 95] = [
    348, 456, 521, 838, 696, 1002, 872, 306, 457, 457, 523, 838, 380, 415, 380, 365, 696, 696, 696,
    696, 696, 696, 696, 696, 696, 696, 400, 400, 838, 838, 838, 580, 1000, 774, 762, 734, 830, 683,
    683, 821, 837, 372, 372, 775, 637, 995, 837, 850, 733, 850, 770, 720, 682, 812, 774, 1103, 771,
    724, 725, 457, 365, 457, 838, 500, 500, 675, 716, 593, 716, 678, 435, 716, 712, 343, 343, 665,
    343, 1042, 712, 687, 716, 716, 493, 595, 478, 712, 652, 924, 645, 652, 582, 712, 365, 712, 838,
];

/// The font stack of every text: DejaVu Sans first (its metrics are the ones measured).
const FONT: &str = "DejaVu Sans, Arial, Helvetica, sans-serif";

/// Advance width of one character in ems (bold, so that regular text is over-estimated).
fn char_em(c: char) -> f64 {
    match c {
        ' '..='~' => ASCII_BOLD[c as usize - 32] as f64 / 1000.0,
        '·' => 0.38,
        '–' => 0.5,
        '−' | '→' | '≥' | '≤' | '×' | '±' => 0.838,
        'μ' => 0.736,
        _ => 1.0,
    }
}

/// A conservative estimate of the width of `s` at font size `size` (pixels): DejaVu Sans Bold
/// plus 5%.
pub(crate) fn text_width(s: &str, size: f64) -> f64 {
    1.05 * size * s.chars().map(char_em).sum::<f64>()
}

/// Greedy word wrap of `s` at `size` into lines no wider than `max_w`; a word wider than a line
/// is broken between characters.
fn wrap(s: &str, size: f64, max_w: f64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        let candidate = if cur.is_empty() {
            word.to_string()
        } else {
            format!("{cur} {word}")
        };
        if text_width(&candidate, size) <= max_w {
            cur = candidate;
            continue;
        }
        if !cur.is_empty() {
            lines.push(std::mem::take(&mut cur));
        }
        if text_width(word, size) <= max_w {
            cur = word.to_string();
            continue;
        }
        for ch in word.chars() {
            let mut next = cur.clone();
            next.push(ch);
            if !cur.is_empty() && text_width(&next, size) > max_w {
                lines.push(std::mem::take(&mut cur));
                cur.push(ch);
            } else {
                cur = next;
            }
        }
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Fits `s` into `max_w`: one line at `size` or shrunk to no less than `min_size`; otherwise
/// wrapped into at most `max_lines` lines at the largest size that allows it; otherwise wrapped
/// at `min_size` into as many lines as it takes. Returns the size and the lines.
fn fit(s: &str, max_w: f64, size: f64, min_size: f64, max_lines: usize) -> (f64, Vec<String>) {
    let shrink_floor = min_size.max(0.8 * size);
    let mut sz = size;
    while sz >= shrink_floor {
        if text_width(s, sz) <= max_w {
            return (sz, vec![s.to_string()]);
        }
        sz -= 0.5;
    }
    let mut sz = size;
    while sz >= min_size {
        let lines = wrap(s, sz, max_w);
        if lines.len() <= max_lines {
            return (sz, lines);
        }
        sz -= 0.5;
    }
    (min_size, wrap(s, min_size, max_w))
}

// ----- a small SVG writer ----------------------------------------------------------------------

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Text anchor.
#[derive(Clone, Copy)]
enum Anchor {
    Start,
    Middle,
}

impl Anchor {
    fn as_str(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
        }
    }
}

struct Svg {
    body: String,
}

impl Svg {
    fn new() -> Self {
        Svg {
            body: String::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn text(&mut self, x: f64, y: f64, size: f64, anchor: Anchor, bold: bool, fill: &str, s: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size:.1}" text-anchor="{}"{} fill="{fill}">{}</text>"#,
            anchor.as_str(),
            if bold { r#" font-weight="bold""# } else { "" },
            esc(s)
        );
    }

    /// Lines of text from the top `y`, `1.25 × size` apart; returns the height used.
    #[allow(clippy::too_many_arguments)]
    fn lines(
        &mut self,
        x: f64,
        y: f64,
        size: f64,
        anchor: Anchor,
        bold: bool,
        fill: &str,
        lines: &[String],
    ) -> f64 {
        let step = 1.25 * size;
        for (i, l) in lines.iter().enumerate() {
            // The baseline sits about 0.95 em below the line's top.
            self.text(
                x,
                y + i as f64 * step + 0.95 * size,
                size,
                anchor,
                bold,
                fill,
                l,
            );
        }
        lines.len() as f64 * step
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{x:.2}" y="{y:.2}" width="{:.2}" height="{:.2}" fill="{fill}"/>"#,
            w.max(0.0),
            h.max(0.0)
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, width: f64, dash: bool) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.2}" y1="{y1:.2}" x2="{x2:.2}" y2="{y2:.2}" stroke="{stroke}" stroke-width="{width:.1}"{}/>"#,
            if dash {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            }
        );
    }

    fn circle(&mut self, cx: f64, cy: f64, r: f64, fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<circle cx="{cx:.2}" cy="{cy:.2}" r="{r:.1}" fill="{fill}"/>"#
        );
    }

    fn finish(self, w: f64, h: f64) -> String {
        let (w, h) = (w.ceil(), h.ceil());
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
             viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"{FONT}\">\n\
             <rect x=\"0\" y=\"0\" width=\"{w:.0}\" height=\"{h:.0}\" fill=\"white\"/>\n{}</svg>\n",
            self.body
        )
    }
}

/// Colours.
const INK: &str = "#222222";
const GREY: &str = "#777777";
const LIGHT: &str = "#e6e6e6";
const BAR: &str = "#7896c8";
const BAR_UNRELIABLE: &str = "#c8c8c8";
const RED: &str = "#c0392b";
const GREEN: &str = "#1e8449";

/// Tick positions at a "nice" step (1, 2, 2.5 or 5 × 10^k) with at most `max_n` ticks in
/// `[lo, hi]`, and the decimals their labels need.
fn nice_ticks(lo: f64, hi: f64, max_n: usize) -> (Vec<f64>, usize) {
    let span = (hi - lo).max(1e-12);
    let raw = span / max_n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut decimals = (-step.log10().floor()).max(0.0) as usize;
    if (step / 10f64.powi(-(decimals as i32)) - 2.5).abs() < 1e-9 {
        decimals += 1;
    }
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    (ticks, decimals)
}

/// Ticks whose labels (formatted by `label`) do not overlap across `width` pixels at `size`.
fn spaced_ticks(
    lo: f64,
    hi: f64,
    width: f64,
    size: f64,
    label: &dyn Fn(f64, usize) -> String,
) -> Vec<(f64, String)> {
    let mut n = 8;
    loop {
        let (ticks, dec) = nice_ticks(lo, hi, n);
        let labelled: Vec<(f64, String)> = ticks.iter().map(|t| (*t, label(*t, dec))).collect();
        let px = |v: f64| (v - lo) / (hi - lo) * width;
        let widest = labelled
            .iter()
            .map(|(_, l)| text_width(l, size))
            .fold(0.0, f64::max);
        let gap = if labelled.len() > 1 {
            px(labelled[1].0) - px(labelled[0].0)
        } else {
            f64::INFINITY
        };
        if gap >= widest + 6.0 || n <= 2 {
            return labelled;
        }
        n -= 1;
    }
}

fn signed_number(x: f64, decimals: usize) -> String {
    let s = format!("{:.decimals$}", x.abs());
    if x < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0') {
        format!("−{s}")
    } else if s.chars().any(|c| c.is_ascii_digit() && c != '0') {
        format!("+{s}")
    } else {
        s
    }
}

// ----- posterior panels --------------------------------------------------------------------------

/// What a posterior panel shows.
#[derive(Debug, Clone)]
pub enum PanelBody<'a> {
    /// Posterior draws of mu(candidate) − mu(baseline).
    Draws {
        /// The draws, all chains.
        draws: &'a [f64],
        /// The HDI bounds.
        hdi: (f64, f64),
        /// The HDI mass.
        hdi_mass: f64,
        /// `Some(figures)` when the sampler did not converge (R-hat, ESS, divergences): the
        /// panel is greyed and gives no verdict.
        unreliable: Option<String>,
    },
    /// Nothing to draw, and why (BEST could not be fitted, no draws).
    Missing(String),
}

/// One panel of a posterior figure.
#[derive(Debug, Clone)]
pub struct PosteriorPanel<'a> {
    /// The panel title, e.g. `tiny-llama → tiny-llama-instruct`.
    pub title: String,
    /// What it shows.
    pub body: PanelBody<'a>,
}

const BINS: usize = 40;

fn histogram(draws: &[f64], lo: f64, hi: f64) -> Vec<(f64, f64, f64)> {
    let width = (hi - lo) / BINS as f64;
    let mut counts = [0usize; BINS];
    for &d in draws {
        if d.is_finite() {
            let i = (((d - lo) / width).floor() as isize).clamp(0, BINS as isize - 1) as usize;
            counts[i] += 1;
        }
    }
    let n = draws.len().max(1) as f64;
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let a = lo + i as f64 * width;
            (a, a + width, c as f64 / (n * width))
        })
        .collect()
}

const PANEL_W: f64 = 520.0;
const PLOT_H: f64 = 170.0;
const PAD: f64 = 14.0;

/// The header of a panel: its title lines and status lines, with their sizes and colours.
struct PanelHead {
    title: (f64, Vec<String>),
    status: Vec<(f64, bool, &'static str, Vec<String>)>,
}

impl PanelHead {
    fn height(&self) -> f64 {
        1.25 * self.title.0 * self.title.1.len() as f64
            + 4.0
            + self
                .status
                .iter()
                .map(|(sz, _, _, l)| 1.25 * sz * l.len() as f64)
                .sum::<f64>()
    }
}

fn panel_head(p: &PosteriorPanel<'_>) -> Result<PanelHead> {
    let inner = PANEL_W - 2.0 * PAD;
    let title = fit(&p.title, inner, 14.0, 10.0, 2);
    let mut status = Vec::new();
    let mut line = |text: &str, bold: bool, colour: &'static str| {
        let (sz, lines) = fit(text, inner, 11.5, 9.5, 3);
        status.push((sz, bold, colour, lines));
    };
    match &p.body {
        PanelBody::Draws {
            draws,
            hdi,
            hdi_mass,
            unreliable,
        } => {
            let finite: Vec<f64> = draws.iter().copied().filter(|d| d.is_finite()).collect();
            if finite.is_empty() {
                return Err(Error::Internal(format!(
                    "figure panel `{}` has no finite draws",
                    p.title
                )));
            }
            let mean = finite.iter().sum::<f64>() / finite.len() as f64;
            match unreliable {
                Some(figures) => {
                    line("unreliable: the sampler did not converge", true, RED);
                    line(&format!("{figures}; no verdict"), false, RED);
                }
                None => {
                    let verdict = if hdi.0 > 0.0 || hdi.1 < 0.0 {
                        "excludes 0: credible"
                    } else {
                        "includes 0: no credible difference"
                    };
                    line(
                        &format!(
                            "mean {}; {:.0}% HDI [{}, {}] {verdict}",
                            signed_number(mean, 4),
                            100.0 * hdi_mass,
                            signed_number(hdi.0, 4),
                            signed_number(hdi.1, 4)
                        ),
                        false,
                        INK,
                    );
                }
            }
        }
        PanelBody::Missing(_) => line("not fitted", true, GREY),
    }
    Ok(PanelHead { title, status })
}

/// Draws one panel with its top-left corner at (`x`, `y`), the header taking `head_h`.
fn draw_panel(
    svg: &mut Svg,
    p: &PosteriorPanel<'_>,
    head: &PanelHead,
    x: f64,
    y: f64,
    head_h: f64,
) {
    let inner = PANEL_W - 2.0 * PAD;
    let mut ty = y + PAD;
    ty += svg.lines(
        x + PAD,
        ty,
        head.title.0,
        Anchor::Start,
        true,
        INK,
        &head.title.1,
    );
    ty += 4.0;
    for (sz, bold, colour, lines) in &head.status {
        ty += svg.lines(x + PAD, ty, *sz, Anchor::Start, *bold, colour, lines);
    }
    let top = y + PAD + head_h + 6.0;
    let bottom = top + PLOT_H;
    let (x0, x1) = (x + PAD, x + PAD + inner);
    match &p.body {
        PanelBody::Missing(reason) => {
            svg.rect(x0, top, inner, PLOT_H + 16.0, "#f4f4f4");
            let (sz, lines) = fit(reason, inner - 24.0, 12.0, 10.0, 6);
            let h = 1.25 * sz * lines.len() as f64;
            svg.lines(
                x0 + inner / 2.0,
                top + (PLOT_H + 16.0 - h) / 2.0,
                sz,
                Anchor::Middle,
                false,
                GREY,
                &lines,
            );
        }
        PanelBody::Draws {
            draws,
            hdi,
            unreliable,
            ..
        } => {
            let finite: Vec<f64> = draws.iter().copied().filter(|d| d.is_finite()).collect();
            let mut lo = finite
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
                .min(0.0);
            let mut hi = finite
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max)
                .max(0.0);
            if hi - lo < 1e-12 {
                lo -= 1e-3;
                hi += 1e-3;
            }
            let pad = 0.05 * (hi - lo);
            let (lo, hi) = (lo - pad, hi + pad);
            let sx = |v: f64| x0 + (v - lo) / (hi - lo) * inner;
            let bars = histogram(&finite, lo, hi);
            let dmax = bars.iter().map(|b| b.2).fold(0.0, f64::max).max(1e-300);
            let fill = if unreliable.is_some() {
                BAR_UNRELIABLE
            } else {
                BAR
            };
            for (a, b, d) in &bars {
                let h = d / dmax * (PLOT_H - 8.0);
                svg.rect(sx(*a), bottom - h, sx(*b) - sx(*a), h, fill);
            }
            // Zero, dashed, across the plot.
            svg.line(sx(0.0), top, sx(0.0), bottom, RED, 1.0, true);
            // The HDI as a bar in its own strip under the histogram: nothing is drawn over it.
            if unreliable.is_none() {
                svg.line(
                    sx(hdi.0),
                    bottom + 7.0,
                    sx(hdi.1),
                    bottom + 7.0,
                    INK,
                    4.0,
                    false,
                );
            }
            let axis = bottom + 16.0;
            svg.line(x0, axis, x1, axis, INK, 1.0, false);
            let ticks = spaced_ticks(lo, hi, inner, 11.0, &|v, d| signed_number(v, d));
            for (t, label) in &ticks {
                svg.line(sx(*t), axis, sx(*t), axis + 4.0, INK, 1.0, false);
                // Keep edge labels inside the panel.
                let w = text_width(label, 11.0);
                let cx = sx(*t).clamp(x0 + w / 2.0, x1 - w / 2.0);
                svg.text(cx, axis + 17.0, 11.0, Anchor::Middle, false, INK, label);
            }
            svg.text(
                x0 + inner / 2.0,
                axis + 34.0,
                12.0,
                Anchor::Middle,
                false,
                INK,
                "mu(candidate) − mu(baseline)",
            );
        }
    }
}

/// Renders posterior panels in a grid (two columns) under `title`, as an SVG document.
pub fn posteriors_svg(title: &str, panels: &[PosteriorPanel<'_>]) -> Result<String> {
    if panels.is_empty() {
        return Err(Error::Internal(format!(
            "figure `{title}`: nothing to draw"
        )));
    }
    let cols = panels.len().min(2);
    let rows = panels.len().div_ceil(cols);
    let w = PANEL_W * cols as f64;
    let heads = panels.iter().map(panel_head).collect::<Result<Vec<_>>>()?;
    let mut svg = Svg::new();
    let (tsz, tlines) = fit(title, w - 2.0 * PAD, 18.0, 12.0, 3);
    let mut y = PAD + svg.lines(PAD, PAD, tsz, Anchor::Start, true, INK, &tlines) + 6.0;
    for r in 0..rows {
        let row: Vec<usize> = (r * cols..((r + 1) * cols).min(panels.len())).collect();
        let head_h = row.iter().map(|&i| heads[i].height()).fold(0.0, f64::max);
        for (c, &i) in row.iter().enumerate() {
            draw_panel(
                &mut svg,
                &panels[i],
                &heads[i],
                c as f64 * PANEL_W,
                y,
                head_h,
            );
        }
        y += PAD + head_h + 6.0 + PLOT_H + 16.0 + 44.0;
    }
    Ok(svg.finish(w, y + PAD))
}

// ----- the forest plot ---------------------------------------------------------------------------

/// One row of the forest plot: a pair's rate difference on one subset.
#[derive(Debug, Clone)]
pub struct ForestRow {
    /// The comparison (group header) it belongs to.
    pub group: String,
    /// The pair, `baseline → candidate`.
    pub pair: String,
    /// The subset (`all` or a subset's name).
    pub subset: String,
    /// The observed difference rate_candidate − rate_baseline (proportion units).
    pub observed: f64,
    /// Its HDI (proportion units).
    pub hdi: (f64, f64),
    /// P(candidate more toxic).
    pub p_higher: f64,
}

/// The forest plot of every row's rate difference in percentage points with its HDI, grouped by
/// comparison, pair after pair; `subtitle` under the title.
pub fn forest_svg(
    title: &str,
    subtitle: &str,
    rows: &[ForestRow],
    hdi_mass: f64,
) -> Result<String> {
    if rows.is_empty() {
        return Err(Error::Internal(format!(
            "figure `{title}`: nothing to draw"
        )));
    }
    const SZ: f64 = 12.0;
    const ROW: f64 = 20.0;
    const PLOT_W: f64 = 360.0;
    let head = [
        "pair (baseline → candidate)".to_string(),
        "subset".to_string(),
        format!("difference (pp), {:.0}% HDI", 100.0 * hdi_mass),
        "value (pp)".to_string(),
        "P(candidate more toxic)".to_string(),
    ];
    let value = |r: &ForestRow| {
        format!(
            "{} [{}, {}]",
            signed_number(100.0 * r.observed, 1),
            signed_number(100.0 * r.hdi.0, 1),
            signed_number(100.0 * r.hdi.1, 1)
        )
    };
    let col = |texts: &mut dyn Iterator<Item = String>, header: &str| {
        texts
            .map(|t| text_width(&t, SZ))
            .fold(text_width(header, SZ), f64::max)
            + 16.0
    };
    let w_pair = col(&mut rows.iter().map(|r| r.pair.clone()), &head[0]);
    let w_sub = col(&mut rows.iter().map(|r| r.subset.clone()), &head[1]);
    let w_plot = PLOT_W.max(text_width(&head[2], SZ) + 16.0);
    let w_val = col(&mut rows.iter().map(value), &head[3]);
    let w_p = col(&mut std::iter::empty(), &head[4]);
    let w = PAD + w_pair + w_sub + w_plot + w_val + w_p + PAD;
    let (x_pair, x_sub) = (PAD, PAD + w_pair);
    let x_plot = x_sub + w_sub;
    let (x_val, x_p) = (x_plot + w_plot, x_plot + w_plot + w_val);

    let mut svg = Svg::new();
    let (tsz, tl) = fit(title, w - 2.0 * PAD, 18.0, 12.0, 3);
    let mut y = PAD + svg.lines(PAD, PAD, tsz, Anchor::Start, true, INK, &tl);
    let (ssz, sl) = fit(subtitle, w - 2.0 * PAD, 12.0, 10.0, 4);
    y += 4.0 + svg.lines(PAD, y + 4.0, ssz, Anchor::Start, false, GREY, &sl) + 10.0;

    // The x scale: every HDI and 0, padded.
    let lo = rows.iter().map(|r| r.hdi.0).fold(0.0, f64::min) * 100.0;
    let hi = rows.iter().map(|r| r.hdi.1).fold(0.0, f64::max) * 100.0;
    let span = (hi - lo).max(1.0);
    let (lo, hi) = (lo - 0.04 * span, hi + 0.04 * span);
    let (p0, p1) = (x_plot + 8.0, x_plot + w_plot - 8.0);
    let sx = |v: f64| p0 + (v - lo) / (hi - lo) * (p1 - p0);
    let ticks = spaced_ticks(lo, hi, p1 - p0, 11.0, &|v, d| signed_number(v, d));

    // Column headers, then the tick labels of the plot column.
    svg.text(x_pair + 4.0, y + SZ, SZ, Anchor::Start, true, INK, &head[0]);
    svg.text(x_sub + 4.0, y + SZ, SZ, Anchor::Start, true, INK, &head[1]);
    svg.text(
        (p0 + p1) / 2.0,
        y + SZ,
        SZ,
        Anchor::Middle,
        true,
        INK,
        &head[2],
    );
    svg.text(x_val + 4.0, y + SZ, SZ, Anchor::Start, true, INK, &head[3]);
    svg.text(x_p + 4.0, y + SZ, SZ, Anchor::Start, true, INK, &head[4]);
    y += SZ + 8.0;
    for (t, label) in &ticks {
        let w = text_width(label, 11.0);
        let cx = sx(*t).clamp(x_plot + w / 2.0, x_plot + w_plot - w / 2.0);
        svg.text(cx, y + 11.0, 11.0, Anchor::Middle, false, GREY, label);
    }
    y += 18.0;
    let grid_top = y;

    // Rows, with a header line per comparison.
    let mut last_group = "";
    let mut last_pair = "";
    let mut marks = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if r.group != last_group {
            let (gsz, gl) = fit(&r.group, w - 2.0 * PAD, 13.0, 10.0, 3);
            y += 6.0;
            y += svg.lines(PAD, y, gsz, Anchor::Start, true, INK, &gl) + 2.0;
            svg.line(PAD, y, w - PAD, y, LIGHT, 1.0, false);
            last_group = &r.group;
            last_pair = "";
        }
        if i % 2 == 0 {
            svg.rect(PAD, y, w - 2.0 * PAD, ROW, "#f7f7f7");
        }
        let base = y + ROW / 2.0 + 0.35 * SZ;
        if r.pair != last_pair {
            svg.text(x_pair + 4.0, base, SZ, Anchor::Start, true, INK, &r.pair);
            last_pair = &r.pair;
        }
        let bold = r.subset == crate::report::ALL;
        svg.text(x_sub + 4.0, base, SZ, Anchor::Start, bold, INK, &r.subset);
        svg.text(x_val + 4.0, base, SZ, Anchor::Start, false, INK, &value(r));
        svg.text(
            x_p + 4.0,
            base,
            SZ,
            Anchor::Start,
            false,
            INK,
            &format!("{:.3}", r.p_higher),
        );
        marks.push((y + ROW / 2.0, r));
        y += ROW;
    }
    // Grid and zero line under the marks.
    for (t, _) in &ticks {
        svg.line(sx(*t), grid_top, sx(*t), y, LIGHT, 1.0, false);
    }
    svg.line(sx(0.0), grid_top, sx(0.0), y, INK, 1.0, false);
    for (cy, r) in marks {
        let colour = if r.hdi.0 > 0.0 {
            RED
        } else if r.hdi.1 < 0.0 {
            GREEN
        } else {
            GREY
        };
        svg.line(
            sx(100.0 * r.hdi.0),
            cy,
            sx(100.0 * r.hdi.1),
            cy,
            colour,
            2.0,
            false,
        );
        svg.circle(sx(100.0 * r.observed), cy, 4.0, colour);
    }
    // Legend.
    y += 14.0;
    let mut x = PAD;
    for (colour, label) in [
        (RED, "credibly more toxic (HDI above 0)"),
        (GREEN, "credibly less toxic (HDI below 0)"),
        (GREY, "no credible difference (HDI holds 0)"),
    ] {
        let lw = text_width(label, 11.0);
        if x + 16.0 + lw > w - PAD {
            x = PAD;
            y += 18.0;
        }
        svg.circle(x + 5.0, y + 6.0, 4.0, colour);
        svg.text(x + 14.0, y + 10.0, 11.0, Anchor::Start, false, INK, label);
        x += 14.0 + lw + 18.0;
    }
    y += 18.0;
    Ok(svg.finish(w, y + PAD))
}

// ----- toxic rates --------------------------------------------------------------------------------

/// One model's toxic rate on one subset: the observed rate and its HDI.
#[derive(Debug, Clone, Copy)]
pub struct RateCell {
    /// The observed rate.
    pub rate: f64,
    /// The HDI of its posterior.
    pub hdi: (f64, f64),
}

/// One model's row of the rates figure.
#[derive(Debug, Clone)]
pub struct RateRow {
    /// The model's family.
    pub family: String,
    /// The model's name.
    pub model: String,
    /// Its role.
    pub role: String,
    /// One cell per subset column (`None`: the model has no prompt of that subset).
    pub cells: Vec<Option<RateCell>>,
}

/// Every model's toxic rate per subset with its HDI: one column per subset (each its own
/// 0–100% axis), one row per model, grouped by family.
pub fn rates_svg(
    title: &str,
    subsets: &[String],
    rows: &[RateRow],
    hdi_mass: f64,
) -> Result<String> {
    if rows.is_empty() || subsets.is_empty() {
        return Err(Error::Internal(format!(
            "figure `{title}`: nothing to draw"
        )));
    }
    const SZ: f64 = 12.0;
    const ROW: f64 = 20.0;
    const CELL: f64 = 128.0;
    let fam_w = rows
        .iter()
        .map(|r| text_width(&r.family, SZ))
        .fold(text_width("family", SZ), f64::max)
        + 16.0;
    let model_w = rows
        .iter()
        .map(|r| text_width(&r.model, SZ))
        .fold(text_width("model", SZ), f64::max)
        + 16.0;
    let role_w = rows
        .iter()
        .map(|r| text_width(&r.role, 11.0))
        .fold(text_width("role", SZ), f64::max)
        + 16.0;
    let cell_w = subsets
        .iter()
        .map(|s| text_width(s, SZ) + 16.0)
        .fold(CELL, f64::max);
    let x_cells = PAD + fam_w + model_w + role_w;
    let w = x_cells + cell_w * subsets.len() as f64 + PAD;

    let mut svg = Svg::new();
    let (tsz, tl) = fit(title, w - 2.0 * PAD, 18.0, 12.0, 3);
    let mut y = PAD + svg.lines(PAD, PAD, tsz, Anchor::Start, true, INK, &tl);
    let subtitle = format!(
        "Dot: the share of a model's continuations scored toxic; bar: the {:.0}% HDI of its \
         Beta(1,1)-Binomial posterior. Each subset's column has its own axis, in percent (0, 50, \
         100).",
        100.0 * hdi_mass
    );
    let (ssz, sl) = fit(&subtitle, w - 2.0 * PAD, 12.0, 10.0, 4);
    y += 4.0 + svg.lines(PAD, y + 4.0, ssz, Anchor::Start, false, GREY, &sl) + 10.0;

    svg.text(PAD + 4.0, y + SZ, SZ, Anchor::Start, true, INK, "family");
    svg.text(
        PAD + fam_w + 4.0,
        y + SZ,
        SZ,
        Anchor::Start,
        true,
        INK,
        "model",
    );
    svg.text(
        PAD + fam_w + model_w + 4.0,
        y + SZ,
        SZ,
        Anchor::Start,
        true,
        INK,
        "role",
    );
    for (k, s) in subsets.iter().enumerate() {
        let cx = x_cells + (k as f64 + 0.5) * cell_w;
        svg.text(cx, y + SZ, SZ, Anchor::Middle, true, INK, s);
    }
    y += SZ + 8.0;
    // Each cell's axis runs from `c0` to `c1`, inset so that its labels stay inside the cell.
    const INSET: f64 = 18.0;
    let span = |k: usize| {
        (
            x_cells + k as f64 * cell_w + INSET,
            x_cells + (k + 1) as f64 * cell_w - INSET,
        )
    };
    let axis_labels = |svg: &mut Svg, y: f64| {
        for k in 0..subsets.len() {
            let (c0, c1) = span(k);
            for (v, label) in [(0.0, "0"), (0.5, "50"), (1.0, "100")] {
                svg.text(
                    c0 + v * (c1 - c0),
                    y + 10.0,
                    10.0,
                    Anchor::Middle,
                    false,
                    GREY,
                    label,
                );
            }
        }
    };
    axis_labels(&mut svg, y);
    y += 16.0;
    let top = y;
    let mut last_family = "";
    for (i, r) in rows.iter().enumerate() {
        if i % 2 == 0 {
            svg.rect(PAD, y, w - 2.0 * PAD, ROW, "#f7f7f7");
        }
        if r.family != last_family && i > 0 {
            svg.line(PAD, y, w - PAD, y, "#bbbbbb", 1.0, false);
        }
        let base = y + ROW / 2.0 + 0.35 * SZ;
        if r.family != last_family {
            svg.text(PAD + 4.0, base, SZ, Anchor::Start, true, INK, &r.family);
            last_family = &r.family;
        }
        svg.text(
            PAD + fam_w + 4.0,
            base,
            SZ,
            Anchor::Start,
            false,
            INK,
            &r.model,
        );
        svg.text(
            PAD + fam_w + model_w + 4.0,
            base,
            11.0,
            Anchor::Start,
            false,
            GREY,
            &r.role,
        );
        for (k, cell) in r.cells.iter().enumerate() {
            let (c0, c1) = span(k);
            let sx = |v: f64| c0 + v.clamp(0.0, 1.0) * (c1 - c0);
            let cy = y + ROW / 2.0;
            match cell {
                Some(c) => {
                    svg.line(sx(c.hdi.0), cy, sx(c.hdi.1), cy, BAR, 3.0, false);
                    svg.circle(sx(c.rate), cy, 3.5, INK);
                }
                None => svg.text(
                    (c0 + c1) / 2.0,
                    base,
                    11.0,
                    Anchor::Middle,
                    false,
                    GREY,
                    "–",
                ),
            }
        }
        y += ROW;
    }
    // The 0 / 50 / 100% guides of each cell, and a separator between cells.
    for k in 0..subsets.len() {
        let (c0, c1) = span(k);
        for v in [0.0, 0.5, 1.0] {
            svg.line(
                c0 + v * (c1 - c0),
                top,
                c0 + v * (c1 - c0),
                y,
                LIGHT,
                1.0,
                false,
            );
        }
        if k > 0 {
            let x = x_cells + k as f64 * cell_w;
            svg.line(x, top - 36.0, x, y, "#bbbbbb", 1.0, false);
        }
    }
    y += 4.0;
    axis_labels(&mut svg, y);
    y += 16.0;
    Ok(svg.finish(w, y + PAD))
}

/// The font size at which `s` fits `max_w` pixels, from `size` down to `min_size` (a plotters
/// title cannot wrap).
fn fitting_size(s: &str, max_w: f64, size: f64, min_size: f64) -> f64 {
    let mut sz = size;
    while sz > min_size && text_width(s, sz) > max_w {
        sz -= 0.5;
    }
    sz
}

/// One reference line of a drift figure.
#[derive(Debug, Clone)]
pub struct RefLine {
    /// The model's name.
    pub label: String,
    /// Its role in the study.
    pub role: String,
    /// Its toxic rate.
    pub rate: f64,
}

/// A drift figure: toxic rate (all prompts) against the training step, the HDI as a band, the
/// reference models' rates as dashed horizontal lines.
pub fn drift_svg(
    title: &str,
    points: &[(usize, f64, f64, f64)],
    refs: &[RefLine],
    hdi_mass: f64,
) -> Result<String> {
    if points.is_empty() {
        return Err(Error::Internal(format!("figure `{title}`: no point")));
    }
    let (w, h) = (820u32, 520u32);
    let fail =
        |e: &dyn std::fmt::Display| Error::Internal(format!("figure `{title}`: cannot draw: {e}"));
    let x_lo = 0.0f64;
    let x_max = points.iter().map(|p| p.0).max().unwrap_or(1) as f64;
    let x_hi = x_max * 1.05 + 0.5;
    let y_top = points
        .iter()
        .map(|p| p.3)
        .chain(refs.iter().map(|r| r.rate))
        .fold(0.0f64, f64::max);
    let y_hi = (y_top * 1.15).clamp(0.01, 1.0);
    let palette = [
        RGBColor(200, 60, 60),
        RGBColor(40, 140, 70),
        RGBColor(150, 90, 190),
        RGBColor(200, 130, 20),
    ];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let (head, body) = root.split_vertically(50);
        // Shrunk until it fits: a plotters text cannot wrap.
        let size = fitting_size(title, w as f64 - 32.0, 20.0, 9.0);
        head.draw_text(
            title,
            &("sans-serif", size).into_font().color(&BLACK),
            (16, 16),
        )
        .map_err(|e| fail(&e))?;
        // The legend takes the right-hand strip so nothing covers the curve.
        let (plot, legend) = body.split_horizontally(w - 230);
        let mut chart = ChartBuilder::on(&plot)
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x_lo..x_hi, 0.0..y_hi)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .x_desc("training step")
            .y_desc("toxic rate (all prompts)")
            .x_labels(8)
            .y_labels(6)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{:.1}%", 100.0 * y))
            .draw()
            .map_err(|e| fail(&e))?;
        let band = RGBColor(120, 150, 200).mix(0.35);
        let mut poly: Vec<(f64, f64)> = points.iter().map(|p| (p.0 as f64, p.3)).collect();
        poly.extend(points.iter().rev().map(|p| (p.0 as f64, p.2)));
        chart
            .draw_series([Polygon::new(poly, band.filled())])
            .map_err(|e| fail(&e))?;
        let blue = RGBColor(40, 80, 160);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0 as f64, p.1)),
                blue.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.0 as f64, p.1), 4, blue.filled())),
            )
            .map_err(|e| fail(&e))?;
        for (i, r) in refs.iter().enumerate() {
            let c = palette[i % palette.len()];
            // Dashes by hand: short segments across the plot.
            let n = 60;
            let seg = (x_hi - x_lo) / n as f64;
            chart
                .draw_series((0..n).step_by(2).map(|k| {
                    let a = x_lo + k as f64 * seg;
                    PathElement::new(vec![(a, r.rate), (a + seg, r.rate)], c.stroke_width(2))
                }))
                .map_err(|e| fail(&e))?;
        }
        let font = ("sans-serif", 14).into_font().color(&BLACK);
        let mut y = 30;
        legend
            .draw(&PathElement::new(
                vec![(8, y), (36, y)],
                blue.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?;
        legend
            .draw(&Text::new("checkpoints", (44, y - 8), font.clone()))
            .map_err(|e| fail(&e))?;
        y += 26;
        legend
            .draw(&Rectangle::new([(8, y - 6), (36, y + 6)], band.filled()))
            .map_err(|e| fail(&e))?;
        legend
            .draw(&Text::new(
                format!("{:.0}% HDI", 100.0 * hdi_mass),
                (44, y - 8),
                font.clone(),
            ))
            .map_err(|e| fail(&e))?;
        for (i, r) in refs.iter().enumerate() {
            y += 26;
            let c = palette[i % palette.len()];
            legend
                .draw(&PathElement::new(vec![(8, y), (18, y)], c.stroke_width(2)))
                .map_err(|e| fail(&e))?;
            legend
                .draw(&PathElement::new(vec![(26, y), (36, y)], c.stroke_width(2)))
                .map_err(|e| fail(&e))?;
            // Long names are cut so the legend stays inside the figure.
            let label: String = if r.label.chars().count() > 26 {
                r.label.chars().take(25).chain(['…']).collect()
            } else {
                r.label.clone()
            };
            legend
                .draw(&Text::new(label, (44, y - 8), font.clone()))
                .map_err(|e| fail(&e))?;
            legend
                .draw(&Text::new(
                    format!("{}: {:.1}%", r.role, 100.0 * r.rate),
                    (44, y + 8),
                    font.clone(),
                ))
                .map_err(|e| fail(&e))?;
            y += 14;
        }
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(offset: f64) -> Vec<f64> {
        (0..400)
            .map(|i| offset + 0.0001 * (i % 37) as f64)
            .collect()
    }

    #[test]
    fn text_is_measured_conservatively_and_wrapped_or_shrunk_to_fit() {
        // DejaVu Sans Bold: "W" is 1.103 em; 5% more.
        assert!((text_width("W", 10.0) - 11.5815).abs() < 1e-9);
        assert!(text_width("mmmm", 12.0) > text_width("iiii", 12.0));
        let long = "Comparison 2: instruction-tuned vs Dolly-tuned (LoRA) — all";
        let (sz, lines) = fit(long, 492.0, 18.0, 12.0, 3);
        assert!(lines.len() == 1 || sz >= 12.0);
        for l in &lines {
            assert!(text_width(l, sz) <= 492.0, "{l} at {sz}");
        }
        let (sz, lines) = fit(long, 150.0, 18.0, 12.0, 3);
        assert!(lines.len() > 1, "wrapped");
        for l in &lines {
            assert!(text_width(l, sz) <= 150.0, "{l} at {sz}");
        }
        assert_eq!(lines.join(" "), long, "nothing lost");
        // A word longer than a line is broken, never clipped.
        let word = "x".repeat(80);
        let lines = wrap(&word, 12.0, 100.0);
        assert!(lines.len() > 1 && lines.concat() == word);
        for l in &lines {
            assert!(text_width(l, 12.0) <= 100.0);
        }
    }

    #[test]
    fn posterior_panels_show_fits_unreliable_fits_and_missing_fits() {
        let (a, b, c) = (draws(0.01), draws(-0.002), draws(0.0));
        let panels = [
            PosteriorPanel {
                title: "A → B".into(),
                body: PanelBody::Draws {
                    draws: &a,
                    hdi: (0.0101, 0.0135),
                    hdi_mass: 0.95,
                    unreliable: None,
                },
            },
            PosteriorPanel {
                title: "C → D".into(),
                body: PanelBody::Draws {
                    draws: &b,
                    hdi: (-0.0019, 0.0019),
                    hdi_mass: 0.95,
                    unreliable: None,
                },
            },
            PosteriorPanel {
                title: "E → F".into(),
                body: PanelBody::Draws {
                    draws: &c,
                    hdi: (0.0, 0.003),
                    hdi_mass: 0.95,
                    unreliable: Some("R-hat 2.34, bulk ESS 3, tail ESS 18, 0 divergences".into()),
                },
            },
            PosteriorPanel {
                title: "G → H".into(),
                body: PanelBody::Missing("every baseline score equals 0.5 (zero spread)".into()),
            },
        ];
        let svg = posteriors_svg("Comparison 1 — all", &panels).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for t in ["A → B", "C → D", "E → F", "G → H"] {
            assert!(svg.contains(t), "{t}");
        }
        assert!(svg.contains("excludes 0: credible") && svg.contains("includes 0"));
        assert!(svg.contains("unreliable: the sampler did not converge"));
        assert!(svg.contains("R-hat 2.34, bulk ESS 3"));
        assert!(svg.contains("not fitted") && svg.contains("zero spread"));
        assert!(svg.contains("mu(candidate) − mu(baseline)"));
        // Deterministic: the same input gives the same bytes.
        assert_eq!(svg, posteriors_svg("Comparison 1 — all", &panels).unwrap());
        assert!(posteriors_svg("empty", &[]).is_err());
    }

    #[test]
    fn every_text_of_a_figure_fits_inside_it() {
        // A single panel with a long title: the figure is 520 px wide.
        let a = draws(0.01);
        let title =
            "Comparison 2: instruction-tuned vs Dolly-tuned (LoRA), a much longer title — religion";
        let svg = posteriors_svg(
            title,
            &[PosteriorPanel {
                title: "a-model-with-a-very-long-name-indeed/and-a-revision → another-very-long-model-name-for-the-candidate".into(),
                body: PanelBody::Draws {
                    draws: &a,
                    hdi: (0.0101, 0.0135),
                    hdi_mass: 0.95,
                    unreliable: None,
                },
            }],
        )
        .unwrap();
        assert_texts_inside(&svg);
        let rows: Vec<ForestRow> = ["all", "severe"]
            .iter()
            .map(|s| ForestRow {
                group: "Comparison 1: base vs instruction-tuned".into(),
                pair: "tiny-llama → tiny-llama-instruct".into(),
                subset: s.to_string(),
                observed: 0.09,
                hdi: (0.019, 0.16),
                p_higher: 0.995,
            })
            .collect();
        let svg = forest_svg(
            "Toxic-rate differences",
            "candidate − baseline",
            &rows,
            0.95,
        )
        .unwrap();
        assert_texts_inside(&svg);
        assert!(
            svg.contains("tiny-llama → tiny-llama-instruct") && svg.contains("+9.0 [+1.9, +16.0]")
        );
        let svg = rates_svg(
            "Toxic rates",
            &["all".into(), "severe".into()],
            &[RateRow {
                family: "F".into(),
                model: "m".into(),
                role: "base".into(),
                cells: vec![
                    Some(RateCell {
                        rate: 0.5,
                        hdi: (0.4, 0.6),
                    }),
                    None,
                ],
            }],
            0.95,
        )
        .unwrap();
        assert_texts_inside(&svg);
    }

    /// Every `<text>` lies inside the document's width by the conservative measure.
    fn assert_texts_inside(svg: &str) {
        let attr = |tag: &str, name: &str| -> f64 {
            let k = format!(" {name}=\"");
            let i = tag.find(&k).unwrap() + k.len();
            tag[i..].split('"').next().unwrap().parse().unwrap()
        };
        let head = svg.lines().next().unwrap();
        let width = attr(head, "width");
        for line in svg.lines().filter(|l| l.starts_with("<text")) {
            let x = attr(line, "x");
            let size = attr(line, "font-size");
            let text = line.split('>').nth(1).unwrap().split('<').next().unwrap();
            let text = text
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"");
            let w = text_width(&text, size);
            let (l, r) = if line.contains("text-anchor=\"middle\"") {
                (x - w / 2.0, x + w / 2.0)
            } else if line.contains("text-anchor=\"end\"") {
                (x - w, x)
            } else {
                (x, x + w)
            };
            assert!(
                l >= -0.5 && r <= width + 0.5,
                "{text}: [{l}, {r}] outside 0..{width}"
            );
        }
    }

    #[test]
    fn nice_ticks_are_round_and_inside() {
        let (t, d) = nice_ticks(-0.012, 0.031, 5);
        assert_eq!(d, 2);
        assert!(t.iter().all(|v| *v >= -0.012 && *v <= 0.031));
        assert!(t.contains(&0.0));
        let (t, d) = nice_ticks(-28.0, 16.0, 8);
        assert_eq!((t[0], d), (-20.0, 0));
        let (t, d) = nice_ticks(0.0, 1.0, 4);
        assert_eq!((t.len(), d), (5, 2), "{t:?}");
    }

    #[test]
    fn drift_figure_has_the_band_the_curve_and_the_references() {
        let pts = [
            (4, 0.05, 0.02, 0.1),
            (8, 0.08, 0.04, 0.14),
            (12, 0.12, 0.07, 0.19),
        ];
        let refs = [
            RefLine {
                label: "base".into(),
                role: "base".into(),
                rate: 0.2,
            },
            RefLine {
                label: "a-model-with-a-very-long-name-indeed".into(),
                role: "instruct".into(),
                rate: 0.03,
            },
        ];
        let svg = drift_svg("Drift — m", &pts, &refs, 0.95).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("training step") && svg.contains("base: 20.0%"));
        assert!(svg.contains("95% HDI") && svg.contains("<polygon"));
        assert!(
            svg.contains("a-model-with-a-very-long-…"),
            "long names are cut"
        );
        assert_eq!(svg, drift_svg("Drift — m", &pts, &refs, 0.95).unwrap());
        assert!(drift_svg("e", &[], &refs, 0.95).is_err());
    }
}
