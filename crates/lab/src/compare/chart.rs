//! Charts of the scaling sweep: throughput and p99 latency against writers and against document
//! size, one line per strategy, written as SVG and PNG with a font compiled into the binary
//! (no system fonts or libraries needed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use super::report::RunReport;
use super::{LabError, SCALING_FIXED_SEGMENTS, SCALING_FIXED_WRITERS, Scenario};

/// DejaVu Sans (its license sits next to it in `assets/`).
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const SIZE: (u32, u32) = (1400, 1000);

/// One panel: a title, axis names, and points per series (a strategy, a process).
#[derive(Debug)]
pub struct Panel {
    pub title: &'static str,
    pub x: &'static str,
    pub y: &'static str,
    /// Names of the x values 0, 1, 2, … when x is a category (`p50`, `p95`, …); empty when
    /// x is a number.
    pub x_names: &'static [&'static str],
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
}

/// How a chart's axes are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Both axes logarithmic (the scaling sweep).
    Log,
    /// Both axes linear, from zero (time series).
    Linear,
    /// x names categories (`x_names`), y linear from zero (latency percentiles).
    Categories,
}

/// Writes `path` with the extension replaced by `.svg` and by `.png`; returns both paths.
///
/// # Errors
/// [`LabError::Output`] when there are no scaling runs to draw or a file cannot be written.
pub fn write(runs: &[RunReport], path: &Path) -> Result<Vec<PathBuf>, LabError> {
    let output = |message: String| LabError::Output {
        path: path.display().to_string(),
        message,
    };
    let panels = panels(runs);
    if panels.iter().all(|p| p.series.is_empty()) {
        return Err(output(
            "charts need the scaling scenario (--scenario scaling or all)".into(),
        ));
    }
    write_panels(&panels, Scale::Log, path)
}

/// Draws up to four panels (2 × 2) into `path` with the extension replaced by `.svg` and by
/// `.png`; returns both paths.
///
/// # Errors
/// [`LabError::Output`] when a file cannot be written.
pub fn write_panels(panels: &[Panel], scale: Scale, path: &Path) -> Result<Vec<PathBuf>, LabError> {
    let output = |message: String| LabError::Output {
        path: path.display().to_string(),
        message,
    };
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| output("the embedded font is invalid".into()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| output(e.to_string()))?;
    }
    let svg = path.with_extension("svg");
    let png = path.with_extension("png");
    draw(
        SVGBackend::new(&svg, SIZE).into_drawing_area(),
        panels,
        scale,
    )
    .map_err(output)?;
    draw(
        BitMapBackend::new(&png, SIZE).into_drawing_area(),
        panels,
        scale,
    )
    .map_err(output)?;
    Ok(vec![svg, png])
}

/// The scaling sweep's four panels, as an SVG document held in memory (for a page).
///
/// # Errors
/// [`LabError::Output`] when the runs hold no scaling sweep or the chart cannot be drawn.
pub(crate) fn scaling_svg(runs: &[RunReport]) -> Result<String, LabError> {
    let panels = panels(runs);
    if panels.iter().all(|p| p.series.is_empty()) {
        return Err(LabError::Output {
            path: "the page".into(),
            message: "no scaling runs to draw".into(),
        });
    }
    svg(SIZE, |root| draw(root, &panels, Scale::Log))
}

/// One bar per `(label, value)` on the left, `latency` on the right, as an SVG document held in
/// memory (for a page).
///
/// # Errors
/// [`LabError::Output`] when the chart cannot be drawn.
pub(crate) fn bars_and_lines_svg(
    bars_title: &'static str,
    bars_y: &'static str,
    bars: &[(String, f64)],
    latency: &Panel,
) -> Result<String, LabError> {
    svg((1400, 520), |root| {
        let err = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let halves = root.split_evenly((1, 2));
        draw_bars(&halves[0], bars_title, bars_y, bars)?;
        draw_panel(&halves[1], latency, Scale::Categories)?;
        root.present().map_err(err)
    })
}

/// Draws with `draw` into an SVG document of `size`, returned as text.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<String, LabError> {
    let output = |message: String| LabError::Output {
        path: "the page".into(),
        message,
    };
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| output("the embedded font is invalid".into()))?;
    let mut text = String::new();
    draw(SVGBackend::with_string(&mut text, size).into_drawing_area()).map_err(output)?;
    Ok(text)
}

/// One bar per `(label, value)`, coloured by the label's strategy.
fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y: &str,
    bars: &[(String, f64)],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let top = bars.iter().map(|(_, v)| *v).fold(1.0f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d((0..bars.len()).into_segmented(), 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y)
        .x_labels(bars.len().max(1))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|(l, _)| l.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| compact(*v))
        .light_line_style(WHITE.mix(0.0))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (label, value))| {
            let strategy = label.split_whitespace().next().unwrap_or_default();
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *value),
                ],
                color(strategy).filled(),
            );
            bar.set_margin(0, 0, 10, 10);
            bar
        }))
        .map_err(err)?;
    Ok(())
}

fn panels(runs: &[RunReport]) -> Vec<Panel> {
    let scaling: Vec<&RunReport> = runs
        .iter()
        .filter(|r| r.scenario == Scenario::Scaling)
        .collect();
    let series = |filter: &dyn Fn(&RunReport) -> bool,
                  x: &dyn Fn(&RunReport) -> f64,
                  y: &dyn Fn(&RunReport) -> f64| {
        let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in scaling.iter().filter(|r| filter(r)) {
            out.entry(r.strategy.clone())
                .or_default()
                .push((x(r), y(r).max(1e-3)));
        }
        for points in out.values_mut() {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        out
    };
    let by_writers = |r: &RunReport| r.params.segments == SCALING_FIXED_SEGMENTS;
    let by_size = |r: &RunReport| r.params.writers == SCALING_FIXED_WRITERS;
    let writers = |r: &RunReport| r.params.writers as f64;
    let segments = |r: &RunReport| r.params.segments as f64;
    let throughput = |r: &RunReport| r.throughput;
    let p99 = |r: &RunReport| r.latency_us.p99 as f64 / 1000.0;
    vec![
        Panel {
            title: "Throughput vs writers (20 segments)",
            x: "writers",
            y: "acknowledged updates/s",
            x_names: &[],
            series: series(&by_writers, &writers, &throughput),
        },
        Panel {
            title: "p99 latency vs writers (20 segments)",
            x: "writers",
            y: "p99 ms",
            x_names: &[],
            series: series(&by_writers, &writers, &p99),
        },
        Panel {
            title: "Throughput vs document size (50 writers)",
            x: "segments per journey",
            y: "acknowledged updates/s",
            x_names: &[],
            series: series(&by_size, &segments, &throughput),
        },
        Panel {
            title: "p99 latency vs document size (50 writers)",
            x: "segments per journey",
            y: "p99 ms",
            x_names: &[],
            series: series(&by_size, &segments, &p99),
        },
    ]
}

/// The label of `v` on the x axis: its name when x is a category, else the number.
fn x_label(panel: &Panel, v: f64) -> String {
    if panel.x_names.is_empty() {
        return format!("{v:.0}");
    }
    let nearest = v.round();
    if (v - nearest).abs() > 0.01 || nearest < 0.0 {
        return String::new();
    }
    panel
        .x_names
        .get(nearest as usize)
        .map_or_else(String::new, |name| (*name).to_owned())
}

/// `120000` → `120k`, `2.5` → `2.5`.
fn compact(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn color(strategy: &str) -> RGBColor {
    match strategy {
        "naive" => RGBColor(214, 39, 40),
        "local-lock" => RGBColor(255, 127, 14),
        "optimistic" => RGBColor(31, 119, 180),
        "redlock" => RGBColor(148, 103, 189),
        "lua" => RGBColor(44, 160, 44),
        "hash" | "serve" => RGBColor(23, 190, 207),
        "relay" => RGBColor(148, 103, 189),
        "redis-server" | "used_memory" => RGBColor(214, 39, 40),
        "events stream" => RGBColor(44, 160, 44),
        "outbox backlog" => RGBColor(255, 127, 14),
        _ => RGBColor(90, 90, 90),
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Panel],
    scale: Scale,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    for (area, panel) in root.split_evenly((2, 2)).iter().zip(panels) {
        draw_panel(area, panel, scale)?;
    }
    root.present().map_err(err)
}

/// One panel in `area`, its axes as `scale` says.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    scale: Scale,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let points = panel.series.values().flatten();
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::MAX, 0.0f64);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if y_min > y_max {
        (y_min, y_max) = (1.0, 10.0);
    }
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(panel.title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75);
    match scale {
        Scale::Log => {
            let chart = builder
                .build_cartesian_2d(
                    (0.8f64..x_max * 1.25).log_scale(),
                    (y_min / 1.5..y_max * 1.5).log_scale(),
                )
                .map_err(err)?;
            plot(chart, panel).map_err(err)
        }
        Scale::Linear => {
            let chart = builder
                .build_cartesian_2d(0f64..x_max * 1.02, 0f64..(y_max * 1.15).max(1.0))
                .map_err(err)?;
            plot(chart, panel).map_err(err)
        }
        Scale::Categories => {
            let chart = builder
                .build_cartesian_2d(-0.25f64..x_max + 0.25, 0f64..(y_max * 1.15).max(1.0))
                .map_err(err)?;
            plot(chart, panel).map_err(err)
        }
    }
}

/// Draws one panel's mesh, lines, points and legend.
fn plot<'a, DB: DrawingBackend + 'a, X, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, Y>>,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    {
        chart
            .configure_mesh()
            .x_desc(panel.x)
            .y_desc(panel.y)
            .x_labels(if panel.x_names.is_empty() {
                6
            } else {
                panel.x_names.len()
            })
            .y_labels(6)
            .x_label_formatter(&|v| x_label(panel, *v))
            .y_label_formatter(&|v| compact(*v))
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 14))
            .draw()?;
        for (strategy, points) in &panel.series {
            let c = color(strategy);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                .label(strategy.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                });
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(if panel.x_names.is_empty() {
                SeriesLabelPosition::LowerLeft
            } else {
                SeriesLabelPosition::UpperLeft
            })
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}
