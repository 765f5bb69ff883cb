//! The learning curve as an SVG chart: per round, the hidden like probability of OLEG's picks
//! against random order, the best possible pick and the informed learner (on OLEG's votes and on
//! its own). Plain SVG text: one chart does not need a plotting crate.

use crate::simulation::RoundReport;
use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;

/// The series drawn: name, colour, value per round.
type Series = (&'static str, &'static str, fn(&RoundReport) -> f64);

const SERIES: [Series; 5] = [
    ("OLEG's picks", "#1f77b4", RoundReport::recommended_rate),
    ("informed learner", "#2ca02c", RoundReport::informed_rate),
    (
        "informed, on its own",
        "#9467bd",
        RoundReport::informed_alone_rate,
    ),
    ("best possible", "#7f7f7f", RoundReport::best_rate),
    ("random order", "#d62728", RoundReport::random_rate),
];

/// An SVG of the rounds' like rates, titled `title`.
pub fn learning_curve_svg(reports: &[RoundReport], title: &str) -> String {
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let rounds = reports.len().max(2) as f64;
    let x = |i: usize| LEFT + plot_w * i as f64 / (rounds - 1.0);
    let y = |p: f64| TOP + plot_h * (1.0 - p.clamp(0.0, 1.0));
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="18" font-size="14">{}</text>
"##,
        escape(title)
    );
    for tick in 0..=10 {
        let p = f64::from(tick) / 10.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#e5e5e5"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{p:.1}</text>"##,
            y(p),
            LEFT + plot_w,
            LEFT - 6.0,
            y(p) + 4.0
        );
    }
    for (i, report) in reports.iter().enumerate() {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            x(i),
            TOP + plot_h + 18.0,
            report.round
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">round</text><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">P(like) of the post shown</text>"##,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0,
        TOP + plot_h / 2.0
    );
    for (n, (name, colour, value)) in SERIES.iter().enumerate() {
        let points: Vec<String> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{:.1},{:.1}", x(i), y(value(r))))
            .collect();
        let legend_y = TOP + 20.0 * n as f64;
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>
<line x1="{1:.1}" y1="{2:.1}" x2="{3:.1}" y2="{2:.1}" stroke="{colour}" stroke-width="2"/><text x="{4:.1}" y="{5:.1}">{name}</text>"##,
            points.join(" "),
            WIDTH - RIGHT + 15.0,
            legend_y,
            WIDTH - RIGHT + 40.0,
            WIDTH - RIGHT + 46.0,
            legend_y + 4.0,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_has_a_point_per_round_inside_the_plot() {
        let reports: Vec<RoundReport> = (1..=3)
            .map(|round| RoundReport {
                round,
                votes: 10,
                recommended: 5.0 + f64::from(round),
                random: 4.5,
                best: 8.5,
                informed: 6.0 + f64::from(round),
                informed_alone: 5.5 + f64::from(round),
                ..Default::default()
            })
            .collect();
        let svg = learning_curve_svg(&reports, "a <demo> & more");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;demo&gt; &amp; more"));
        let polylines: Vec<&str> = svg
            .lines()
            .filter_map(|l| l.split("points=\"").nth(1))
            .map(|rest| rest.split('"').next().unwrap())
            .collect();
        assert_eq!(polylines.len(), SERIES.len());
        for points in polylines {
            let points: Vec<(f64, f64)> = points
                .split(' ')
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect();
            assert_eq!(points.len(), 3);
            assert!(points
                .iter()
                .all(|&(x, y)| (LEFT..=WIDTH - RIGHT).contains(&x)
                    && (TOP..=HEIGHT - BOTTOM).contains(&y)));
        }
    }
}
