//! Output people read: a live progress line, tables, and PNG plots (plotters' bitmap backend
//! with a TrueType font read at run time — DejaVu Sans from Debian's fonts-dejavu-core — so no
//! system font library is needed).

use super::gen::{Live, TrialResult};
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Formats frames/s as k/M.
pub fn pps(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} Mpps", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} kpps", v / 1e3)
    } else {
        format!("{v:.0} pps")
    }
}

fn dur(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The live progress line (stderr; redrawn in place on a terminal, one line per trial
/// otherwise) and a time-left estimate for the whole run.
#[derive(Debug)]
pub struct Progress {
    prefix: String,
    section: String,
    what: String,
    target: f64,
    trial_len: Duration,
    trials_done: u32,
    /// Trials planned in sections not started yet (set by the caller).
    pub planned_rest: u32,
    left_in_section: u32,
    trial_wall: Duration,
    trial_started: Instant,
    tty: bool,
    quiet: bool,
}

impl Progress {
    /// A progress reporter; `quiet` prints nothing.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            prefix: String::new(),
            section: String::new(),
            what: String::new(),
            target: 0.0,
            trial_len: Duration::ZERO,
            trials_done: 0,
            planned_rest: 0,
            left_in_section: 0,
            trial_wall: Duration::from_secs(2),
            trial_started: Instant::now(),
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            quiet,
        }
    }

    /// Sets the target name shown first.
    pub fn target(&mut self, name: &str) {
        self.prefix = name.to_string();
    }

    /// Starts a test section.
    pub fn section(&mut self, s: &str) {
        self.section = s.to_string();
        if self.planned_rest > 0 {
            self.planned_rest -= 1;
        }
    }

    /// Upper bound of trials left in the section.
    pub fn plan_left(&mut self, n: u32) {
        self.left_in_section = n;
    }

    /// A trial starts.
    pub fn start_trial(&mut self, what: &str, target: f64, len: Duration) {
        self.what = what.to_string();
        self.target = target;
        self.trial_len = len;
        self.trial_started = Instant::now();
    }

    fn time_left(&self, el: Duration) -> Duration {
        let trials = self.left_in_section.saturating_sub(1) + self.planned_rest * 6;
        self.trial_len.saturating_sub(el) + self.trial_wall * trials
    }

    /// Redraws the line (called while a trial runs).
    pub fn tick(&mut self, el: Duration, live: &Live) {
        if self.quiet || !self.tty {
            return;
        }
        let secs = el.as_secs_f64().max(1e-3);
        let sent = live.sent.load(Ordering::Relaxed);
        let rx = live.received.load(Ordering::Relaxed);
        let loss = if sent > 0 {
            100.0 * (1.0 - rx as f64 / sent as f64).max(0.0)
        } else {
            0.0
        };
        let target = if self.target.is_finite() {
            pps(self.target)
        } else {
            "max".into()
        };
        eprint!(
            "\r\x1b[K[{} {}] {} target {} | tx {} rx {} loss {:.2}% | {} left",
            self.prefix,
            self.section,
            self.what,
            target,
            pps(sent as f64 / secs),
            pps(rx as f64 / secs),
            loss,
            dur(self.time_left(el))
        );
        let _ = std::io::stderr().flush();
    }

    /// A trial ended: prints its summary line.
    pub fn end_trial(&mut self, r: &TrialResult) {
        self.trials_done += 1;
        let wall = self.trial_started.elapsed();
        self.trial_wall = (self.trial_wall * 3 + wall) / 4;
        if self.quiet {
            return;
        }
        let target = if self.target.is_finite() {
            pps(self.target)
        } else {
            "max".into()
        };
        eprintln!(
            "{}[{} {}] {} target {}: offered {} delivered {} loss {:.3}%{}{}",
            if self.tty { "\r\x1b[K" } else { "" },
            self.prefix,
            self.section,
            self.what,
            target,
            pps(r.offered_pps()),
            pps(r.received_pps()),
            r.loss_ratio() * 100.0,
            if r.rx_socket_drops() > 0 {
                format!(" (receiver socket dropped {})", r.rx_socket_drops())
            } else {
                String::new()
            },
            if r.flooded() > 0 {
                format!(" flooded {}", r.flooded())
            } else {
                String::new()
            },
        );
    }

    /// Prints a note line.
    pub fn note(&mut self, s: &str) {
        if !self.quiet {
            eprintln!(
                "{}[{} {}] {s}",
                if self.tty { "\r\x1b[K" } else { "" },
                self.prefix,
                self.section
            );
        }
    }
}

/// A plain text table.
#[derive(Debug, Default)]
pub struct Table {
    /// Column heads.
    pub head: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Renders it as a Markdown table (readable in a terminal too).
    pub fn render(&self) -> String {
        let n = self.head.len();
        let mut w = vec![0; n];
        for r in std::iter::once(&self.head).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.len());
            }
        }
        let line = |r: &Vec<String>| {
            let cells: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        "{:>w$}",
                        r.get(i).map(String::as_str).unwrap_or(""),
                        w = w[i]
                    )
                })
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut s = line(&self.head);
        s.push_str(&format!(
            "|{}|\n",
            w.iter()
                .map(|&x| format!("{}:", "-".repeat(x + 1)))
                .collect::<Vec<_>>()
                .join("|")
        ));
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }
}

/// A data series for a plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend.
    pub name: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
    /// Dashed look (drawn with points only).
    pub dashed: bool,
}

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn ensure_font() -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = FONT_PATHS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or_else(|| {
                "no DejaVu Sans font: apt-get install -y fonts-dejavu-core".to_string()
            })?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "DejaVuSans.ttf is not a usable font".to_string())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Draws a line plot to a PNG. Series with the same name prefix (before " ") share a colour.
pub fn line_plot(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    log_x: bool,
) -> Result<()> {
    ensure_font()?;
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        x0 = 0.0;
        x1 = 1.0;
    }
    if x0 == x1 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.1 };
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let mut names: Vec<&str> = Vec::new();
    for s in series {
        let k = s.name.split(' ').next().unwrap_or("");
        if !names.contains(&k) {
            names.push(k);
        }
    }
    let color_of = |s: &Series| {
        let k = s.name.split(' ').next().unwrap_or("");
        COLORS[names.iter().position(|n| *n == k).unwrap_or(0) % COLORS.len()]
    };
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(xlabel)
                .y_desc(ylabel)
                .light_line_style(WHITE)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| {
                    if y1 < 10.0 {
                        format!("{y:.2}")
                    } else {
                        format!("{y:.0}")
                    }
                })
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(e)?;
            for s in series {
                let c = color_of(s);
                if s.dashed {
                    chart
                        .draw_series(DashedLineSeries::new(
                            s.points.iter().copied(),
                            6,
                            4,
                            c.stroke_width(2),
                        ))
                        .map_err(e)?
                        .label(s.name.clone())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 8, y)], c.stroke_width(2))
                        });
                } else {
                    chart
                        .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(3)))
                        .map_err(e)?
                        .label(s.name.clone())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                        });
                }
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                    .map_err(e)?;
            }
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 15))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(e)?;
        }};
    }
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75);
    if log_x {
        draw!(b
            .build_cartesian_2d((x0..x1).log_scale(), 0.0..y1)
            .map_err(e)?);
    } else {
        draw!(b.build_cartesian_2d(x0..x1, 0.0..y1).map_err(e)?);
    }
    root.present()
        .map_err(e)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_renders_aligned_markdown() {
        let t = Table {
            head: vec!["a".into(), "bbb".into()],
            rows: vec![vec!["1234".into(), "x".into()]],
        };
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{s}");
        assert!(lines[1].starts_with("|-"));
    }

    #[test]
    fn rates_are_human_readable() {
        assert_eq!(pps(2_345_678.0), "2.35 Mpps");
        assert_eq!(pps(12_300.0), "12.3 kpps");
        assert_eq!(pps(5.0), "5 pps");
    }

    #[test]
    fn plot_writes_a_png() {
        if FONT_PATHS.iter().all(|p| !Path::new(p).exists()) {
            eprintln!("skipped: no DejaVu font");
            return;
        }
        let dir = std::env::temp_dir().join(format!("vload-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.png");
        let s = vec![
            Series {
                name: "a".into(),
                points: vec![(64.0, 1.0), (1518.0, 0.5)],
                dashed: false,
            },
            Series {
                name: "a p99".into(),
                points: vec![(64.0, 2.0), (1518.0, 1.0)],
                dashed: true,
            },
        ];
        line_plot(&p, "t", "x", "y", &s, true).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[1..4], b"PNG");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
