//! Loss curves as CSV and as a small hand-written SVG chart (two polylines: training loss per
//! logged step and held-out loss where measured), so no plotting dependency is needed.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// One logged optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossPoint {
    /// Optimizer step (1-based).
    pub step: usize,
    /// Training loss of the step (token-weighted mean over its micro-batches).
    pub loss: f64,
    /// Held-out loss, when measured at this step.
    pub heldout_loss: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens per second of the step.
    pub tokens_per_s: f64,
}

/// The curves as CSV: `step,loss,heldout_loss,lr,grad_norm,tokens_per_s`.
pub fn to_csv(points: &[LossPoint]) -> String {
    let mut s = String::from("step,loss,heldout_loss,lr,grad_norm,tokens_per_s\n");
    for p in points {
        let h = p.heldout_loss.map(|v| format!("{v:.6}")).unwrap_or_default();
        let _ = writeln!(s, "{},{:.6},{},{:.3e},{:.4},{:.2}", p.step, p.loss, h, p.lr, p.grad_norm, p.tokens_per_s);
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The curves as an SVG chart (800×400) titled `title`.
pub fn to_svg(points: &[LossPoint], title: &str) -> String {
    let (w, h) = (800.0f64, 400.0f64);
    let (l, r, t, b) = (60.0, 20.0, 40.0, 40.0);
    let train: Vec<(f64, f64)> = points.iter().filter(|p| p.loss.is_finite()).map(|p| (p.step as f64, p.loss)).collect();
    let held: Vec<(f64, f64)> =
        points.iter().filter_map(|p| p.heldout_loss.filter(|v| v.is_finite()).map(|v| (p.step as f64, v))).collect();
    let all: Vec<&(f64, f64)> = train.iter().chain(held.iter()).collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        w / 2.0,
        esc(title)
    );
    if all.is_empty() {
        svg.push_str("<text x=\"400\" y=\"200\" text-anchor=\"middle\">no data</text>\n</svg>\n");
        return svg;
    }
    let x0 = all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x1 = all.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let y0 = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y1 = all.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let (xs, ys) = ((x1 - x0).max(1.0), (y1 - y0).max(1e-9));
    let px = |x: f64| l + (x - x0) / xs * (w - l - r);
    let py = |y: f64| h - b - (y - y0) / ys * (h - t - b);
    // Axes and ticks.
    let _ = writeln!(svg, "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>", h - b, w - r, h - b);
    let _ = writeln!(svg, "<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>", h - b);
    for i in 0..=4 {
        let fy = y0 + ys * i as f64 / 4.0;
        let fx = x0 + xs * i as f64 / 4.0;
        let _ = writeln!(svg, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{fy:.3}</text>", l - 5.0, py(fy) + 4.0);
        let _ = writeln!(svg, "<line x1=\"{l}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>", py(fy), w - r);
        let _ = writeln!(svg, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>", px(fx), h - b + 16.0, fx.round());
    }
    let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>", w / 2.0, h - 6.0);
    let line = |pts: &[(f64, f64)], color: &str| -> String {
        let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let mut s = format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n", coords.join(" "));
        if pts.len() == 1 {
            let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>", px(pts[0].0), py(pts[0].1));
        }
        s
    };
    svg.push_str(&line(&train, "#1f77b4"));
    if !held.is_empty() {
        svg.push_str(&line(&held, "#d62728"));
        for (x, y) in &held {
            let _ = writeln!(svg, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#d62728\"/>", px(*x), py(*y));
        }
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{0}\" y=\"{1}\" width=\"12\" height=\"3\" fill=\"#1f77b4\"/><text x=\"{2}\" y=\"{3}\">train loss</text>\n\
         <rect x=\"{0}\" y=\"{4}\" width=\"12\" height=\"3\" fill=\"#d62728\"/><text x=\"{2}\" y=\"{5}\">held-out loss</text>",
        w - r - 130.0,
        t + 4.0,
        w - r - 112.0,
        t + 8.0,
        t + 20.0,
        t + 24.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_svg_have_every_point() {
        let pts: Vec<LossPoint> = (1..=5)
            .map(|i| LossPoint {
                step: i,
                loss: 3.0 / i as f64,
                heldout_loss: (i % 2 == 0).then(|| 2.0 / i as f64),
                lr: 1e-4,
                grad_norm: 1.0,
                tokens_per_s: 10.0,
            })
            .collect();
        let csv = to_csv(&pts);
        assert_eq!(csv.lines().count(), 6);
        assert!(csv.lines().nth(2).unwrap().starts_with("2,1.500000,1.000000,"));
        let svg = to_svg(&pts, "a <b>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt;b&gt;"));
        assert!(to_svg(&[], "x").contains("no data"));
    }
}
