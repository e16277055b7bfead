//! The bench's chart: each lane's bars (ours and what it is measured against, from the same
//! run) as an SVG beside BENCHMARKS.md. Hand-written SVG rather than `plotters`: a bar chart
//! is a few rectangles and labels, and plotters lays text out with a font backend
//! (font-kit and the system's fonts) that a CI machine need not have; here the viewer
//! renders the text.

use std::fmt::Write;

/// One lane: what is measured, in what unit, and its bars.
#[derive(Debug, Clone)]
pub struct Lane {
    pub title: String,
    pub unit: &'static str,
    /// Rates are better higher, times lower: said under the title.
    pub higher_is_better: bool,
    pub bars: Vec<Bar>,
}

#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    /// Ours (drawn in colour) or a floor or baseline (grey).
    pub ours: bool,
}

impl Lane {
    pub fn new(title: impl Into<String>, unit: &'static str, higher_is_better: bool) -> Self {
        Self {
            title: title.into(),
            unit,
            higher_is_better,
            bars: Vec::new(),
        }
    }

    pub fn ours(mut self, label: impl Into<String>, value: f64) -> Self {
        self.bars.push(Bar {
            label: label.into(),
            value,
            ours: true,
        });
        self
    }

    pub fn beside(mut self, label: impl Into<String>, value: f64) -> Self {
        self.bars.push(Bar {
            label: label.into(),
            value,
            ours: false,
        });
        self
    }
}

const WIDTH: f64 = 960.0;
const LABEL_W: f64 = 300.0;
const BAR_MAX: f64 = 520.0;
const BAR_H: f64 = 18.0;
const GAP: f64 = 6.0;
const TITLE_H: f64 = 38.0;
const LANE_GAP: f64 = 18.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Bar length for `value` in a lane whose longest bar is `max`.
fn length(value: f64, max: f64) -> f64 {
    if max > 0.0 && value.is_finite() && value > 0.0 {
        (value / max * BAR_MAX).max(1.0)
    } else {
        0.0
    }
}

/// The chart of `lanes`, each scaled to its own largest bar.
pub fn svg(lanes: &[Lane], caption: &str) -> String {
    let height: f64 = 40.0
        + lanes
            .iter()
            .map(|l| TITLE_H + l.bars.len() as f64 * (BAR_H + GAP) + LANE_GAP)
            .sum::<f64>();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="10" y="22" font-size="14" font-weight="bold">{}</text>"##,
        escape(caption)
    );
    let mut y = 40.0;
    for lane in lanes {
        let max = lane.bars.iter().map(|b| b.value).fold(0.0, f64::max);
        let _ = writeln!(
            out,
            r##"<text x="10" y="{:.1}" font-weight="bold">{}</text><text x="10" y="{:.1}" fill="#555">{}, {} is better</text>"##,
            y + 14.0,
            escape(&lane.title),
            y + 30.0,
            lane.unit,
            if lane.higher_is_better {
                "higher"
            } else {
                "lower"
            }
        );
        y += TITLE_H;
        for bar in &lane.bars {
            let fill = if bar.ours { "#1f6fb4" } else { "#b0b0b0" };
            let w = length(bar.value, max);
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{LABEL_W}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{fill}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                LABEL_W - 8.0,
                y + 13.0,
                escape(&bar.label),
                LABEL_W + w + 6.0,
                y + 13.0,
                format_value(bar.value),
            );
            y += BAR_H + GAP;
        }
        y += LANE_GAP;
    }
    out.push_str("</svg>\n");
    out
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lane_is_scaled_to_its_own_longest_bar() {
        let lanes = [
            Lane::new("signing", "sign/s", true)
                .ours("tunnel", 500.0)
                .beside("floor", 1000.0),
            Lane::new("latency <p50>", "ms", false)
                .ours("ours", 2.0)
                .beside("hop", 0.5),
        ];
        let svg = svg(&lanes, "bench & co");
        assert_eq!(svg.matches("<rect x=").count(), 4);
        assert!(
            svg.contains(r#"width="260.0""#),
            "500 of 1000 is half of the bar"
        );
        assert!(svg.contains(r#"width="520.0""#));
        assert!(svg.contains(r#"width="130.0""#), "0.5 of 2 is a quarter");
        assert!(svg.contains("latency &lt;p50&gt;") && svg.contains("bench &amp; co"));
        assert!(svg.contains("lower is better") && svg.contains("higher is better"));
        assert_eq!(length(f64::NAN, 1.0), 0.0);
    }
}
