//! SVG figures: the posterior of mu_baseline − mu_candidate with its HDI, one panel per model
//! pair, like the paper's Figures 1–4 (ArviZ's `plot_posterior`).

use crate::error::{Error, Result};
use plotters::prelude::*;

/// One panel: a pair's posterior draws of the mu difference and its HDI.
#[derive(Debug, Clone)]
pub struct Panel<'a> {
    /// The panel title, e.g. `Llama-2-7b-hf − Llama-2-7b-chat-hf`.
    pub title: String,
    /// Posterior draws of mu_baseline − mu_candidate.
    pub draws: &'a [f64],
    /// The HDI bounds.
    pub hdi: (f64, f64),
    /// The HDI mass (for the label).
    pub hdi_mass: f64,
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

/// Renders the panels, laid out in a grid, as an SVG document with `title` on top.
pub fn posterior_svg(title: &str, panels: &[Panel<'_>]) -> Result<String> {
    if panels.is_empty() {
        return Err(Error::Internal(format!(
            "figure `{title}`: nothing to draw"
        )));
    }
    let cols = panels.len().min(2);
    let rows = panels.len().div_ceil(cols);
    let (w, h) = (520 * cols as u32, 60 + 320 * rows as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| {
            Error::Internal(format!("figure `{title}`: cannot draw: {e}"))
        };
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let (head, body) = root.split_vertically(60);
        head.draw_text(
            title,
            &("sans-serif", 22).into_font().color(&BLACK),
            (16, 18),
        )
        .map_err(|e| fail(&e))?;
        let areas = body.split_evenly((rows, cols));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            let finite: Vec<f64> = panel
                .draws
                .iter()
                .copied()
                .filter(|d| d.is_finite())
                .collect();
            if finite.is_empty() {
                return Err(Error::Internal(format!(
                    "figure `{title}`: panel `{}` has no finite draws",
                    panel.title
                )));
            }
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
            let bars = histogram(&finite, lo, hi);
            let ymax = bars.iter().map(|b| b.2).fold(0.0, f64::max) * 1.25;
            let ymax = if ymax > 0.0 { ymax } else { 1.0 };
            let mean = finite.iter().sum::<f64>() / finite.len() as f64;
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .build_cartesian_2d(lo..hi, 0.0..ymax)
                .map_err(|e| fail(&e))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("mu(baseline) − mu(candidate)")
                .y_desc("density")
                .x_labels(6)
                .y_labels(4)
                .x_label_formatter(&|x| format!("{x:.3}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()
                .map_err(|e| fail(&e))?;
            let fill = RGBColor(120, 150, 200).mix(0.7).filled();
            chart
                .draw_series(
                    bars.iter()
                        .map(|&(a, b, d)| Rectangle::new([(a, 0.0), (b, d)], fill)),
                )
                .map_err(|e| fail(&e))?;
            chart
                .draw_series(LineSeries::new(
                    [(0.0, 0.0), (0.0, ymax)],
                    RGBColor(200, 60, 60).stroke_width(1),
                ))
                .map_err(|e| fail(&e))?;
            let y_hdi = ymax * 0.06;
            chart
                .draw_series(LineSeries::new(
                    [(panel.hdi.0, y_hdi), (panel.hdi.1, y_hdi)],
                    BLACK.stroke_width(4),
                ))
                .map_err(|e| fail(&e))?;
            let label = ("sans-serif", 13).into_font().color(&BLACK);
            chart
                .draw_series([
                    Text::new(
                        format!("{:.4}", panel.hdi.0),
                        (panel.hdi.0, y_hdi * 2.2),
                        label.clone(),
                    ),
                    Text::new(
                        format!("{:.4}", panel.hdi.1),
                        (panel.hdi.1, y_hdi * 2.2),
                        label.clone(),
                    ),
                    Text::new(
                        format!(
                            "mean {mean:.4}; {:.0}% HDI {}",
                            100.0 * panel.hdi_mass,
                            if panel.hdi.0 > 0.0 || panel.hdi.1 < 0.0 {
                                "excludes 0: credible"
                            } else {
                                "includes 0"
                            }
                        ),
                        (lo + 0.03 * (hi - lo), ymax * 0.95),
                        label.clone(),
                    ),
                ])
                .map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
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
        head.draw_text(
            title,
            &("sans-serif", 20).into_font().color(&BLACK),
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

    #[test]
    fn draws_a_panel_per_pair_with_labels() {
        let a: Vec<f64> = (0..400).map(|i| 0.01 + 0.0001 * (i % 37) as f64).collect();
        let b: Vec<f64> = (0..400)
            .map(|i| -0.002 + 0.0001 * (i % 41) as f64)
            .collect();
        let svg = posterior_svg(
            "Comparison 1 — all",
            &[
                Panel {
                    title: "A − B".into(),
                    draws: &a,
                    hdi: (0.0101, 0.0135),
                    hdi_mass: 0.95,
                },
                Panel {
                    title: "C − D".into(),
                    draws: &b,
                    hdi: (-0.0019, 0.0019),
                    hdi_mass: 0.95,
                },
            ],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.contains("A − B") && svg.contains("C − D"));
        assert!(svg.contains("excludes 0: credible") && svg.contains("includes 0"));
        // Deterministic: the same input gives the same bytes.
        let again = posterior_svg(
            "Comparison 1 — all",
            &[
                Panel {
                    title: "A − B".into(),
                    draws: &a,
                    hdi: (0.0101, 0.0135),
                    hdi_mass: 0.95,
                },
                Panel {
                    title: "C − D".into(),
                    draws: &b,
                    hdi: (-0.0019, 0.0019),
                    hdi_mass: 0.95,
                },
            ],
        )
        .unwrap();
        assert_eq!(svg, again);
        assert!(posterior_svg("empty", &[]).is_err());
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
