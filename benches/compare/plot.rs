//! SVG pictures of a run, drawn with plotters.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("plot: {e:?}")
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One method's line, with its legend entry.
fn line(chart: &mut Chart, i: usize, name: &str, points: Vec<(f64, f64)>) -> Result<(), String> {
    let color = Palette99::pick(i).to_rgba();
    chart
        .draw_series(LineSeries::new(points, color.stroke_width(2)))
        .map_err(err)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    Ok(())
}

/// The limit T* drawn from `a` to `b`, then the legend at `at`.
fn limit_and_legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    limit: f64,
    a: (f64, f64),
    b: (f64, f64),
    at: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .draw_series(LineSeries::new(vec![a, b], BLACK.stroke_width(1)))
        .map_err(err)?
        .label(format!("limit T* = {limit:.1} s"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// Hosts with a verified copy over time, one step curve per method, and
/// the physical limit T* as a vertical line.
pub fn completions(
    path: &Path,
    title: &str,
    limit: f64,
    curves: &[(&str, &[f64])],
) -> Result<(), String> {
    let n = curves.iter().map(|c| c.1.len()).max().unwrap_or(0) as f64;
    let tmax = curves
        .iter()
        .flat_map(|c| c.1.iter().copied())
        .fold(limit, f64::max)
        * 1.05;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..tmax, 0f64..n + 0.5)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the joiners started")
        .y_desc("hosts with a verified copy")
        .y_labels(n as usize + 1)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    for (i, (name, done)) in curves.iter().enumerate() {
        let mut sorted = done.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mut points = vec![(0.0, 0.0)];
        for (k, t) in sorted.iter().enumerate() {
            points.push((*t, k as f64));
            points.push((*t, k as f64 + 1.0));
        }
        line(&mut chart, i, name, points)?;
    }
    let (a, b) = ((limit, 0.0), (limit, n + 0.5));
    limit_and_legend(&mut chart, limit, a, b, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(err)
}

/// Last-host time against the number of hosts, one line per method, with
/// the limit T* (the same for every host count).
pub fn scaling(
    path: &Path,
    title: &str,
    hosts: &[usize],
    limit: f64,
    curves: &[(&str, Vec<f64>)],
) -> Result<(), String> {
    let tmax = curves
        .iter()
        .flat_map(|c| c.1.iter().copied())
        .fold(limit, f64::max)
        * 1.1;
    let hi = *hosts.last().unwrap_or(&1) as f64;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..hi * 1.1, 0f64..tmax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("hosts (seed included)")
        .y_desc("last host done, seconds")
        .draw()
        .map_err(err)?;
    for (i, (name, last)) in curves.iter().enumerate() {
        let points: Vec<(f64, f64)> = hosts
            .iter()
            .map(|h| *h as f64)
            .zip(last.iter().copied())
            .collect();
        line(&mut chart, i, name, points.clone())?;
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(err)?;
    }
    let (a, b) = ((0.0, limit), (hi * 1.1, limit));
    limit_and_legend(&mut chart, limit, a, b, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)
}
