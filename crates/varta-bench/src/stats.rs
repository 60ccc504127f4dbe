//! Repetition summaries, percentiles, number formatting and goal lines.

use serde::Serialize;

/// Median, min and max of one figure over the repetitions.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// NaN values (a repetition that measured nothing) are left out; an
    /// empty or all-NaN input gives NaN, printed as "n/a" (null in JSON).
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return Summary {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Summary {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }

    /// `median (min–max)` with `decimals` digits and thousands separators.
    pub fn cell(&self, decimals: usize) -> String {
        if self.median.is_nan() {
            return "n/a".to_string();
        }
        format!(
            "{} ({}–{})",
            num(self.median, decimals),
            num(self.min, decimals),
            num(self.max, decimals)
        )
    }
}

/// Nearest-rank percentile of an ascending slice (`p` in 0..=1); NaN if empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Formats with `decimals` digits and `,` between thousands.
pub fn num(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return "n/a".to_string();
    }
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(a, b)| (a, b));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if x < 0.0 && s.chars().any(|c| c != '0' && c != '.') {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// Direction of a goal.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    AtLeast,
    AtMost,
}

/// One `GOAL name: PASS|FAIL (measured vs target)` line.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub name: String,
    pub pass: bool,
    pub measured: f64,
    pub target: f64,
    pub cmp: Cmp,
    pub unit: String,
}

impl Goal {
    pub fn new(name: &str, measured: f64, cmp: Cmp, target: f64, unit: &str) -> Goal {
        // A NaN measurement (nothing measured) never passes.
        let pass = match cmp {
            Cmp::AtLeast => measured >= target,
            Cmp::AtMost => measured <= target,
        };
        Goal {
            name: name.to_string(),
            pass,
            measured,
            target,
            cmp,
            unit: unit.to_string(),
        }
    }

    fn fmt_value(&self, x: f64) -> String {
        let decimals = if x.abs() >= 100.0 {
            0
        } else if x.abs() >= 10.0 {
            1
        } else if x.abs() >= 1.0 {
            2
        } else {
            3
        };
        format!("{}{}", num(x, decimals), self.unit)
    }

    pub fn line(&self) -> String {
        let op = match self.cmp {
            Cmp::AtLeast => ">=",
            Cmp::AtMost => "<=",
        };
        let mut detail = format!(
            "{} vs {op} {}",
            self.fmt_value(self.measured),
            self.fmt_value(self.target)
        );
        if !self.measured.is_finite() {
            detail.push_str("; nothing was measured");
        } else if !self.pass {
            // Say by how much, absolute and relative to the target.
            let gap = (self.measured - self.target).abs();
            let word = match self.cmp {
                Cmp::AtLeast => "short by",
                Cmp::AtMost => "over by",
            };
            detail.push_str(&format!("; {word} {}", self.fmt_value(gap)));
            if self.target != 0.0 {
                detail.push_str(&format!(
                    " = {:.1}% of target",
                    100.0 * gap / self.target.abs()
                ));
            }
        }
        format!(
            "GOAL {}: {} ({detail})",
            self.name,
            if self.pass { "PASS" } else { "FAIL" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_median_min_max() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[1.0, 2.0, 4.0, f64::NAN]).median, 2.0);
        assert!(Summary::of(&[]).median.is_nan());
        assert_eq!(Summary::of(&[4.0, 1.0]).median, 2.5);
    }

    #[test]
    fn percentiles_and_numbers() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(num(1_234_567.891, 1), "1,234,567.9");
        assert_eq!(num(999.0, 0), "999");
        assert_eq!(num(-1234.5, 1), "-1,234.5");
    }

    #[test]
    fn goal_lines() {
        let g = Goal::new("x", 0.67, Cmp::AtLeast, 0.8, "x");
        assert!(!g.pass);
        assert!(g
            .line()
            .starts_with("GOAL x: FAIL (0.670x vs >= 0.800x; short by 0.130x"));
        assert!(Goal::new("y", 1.0, Cmp::AtMost, 1.0, " ms").pass);
        assert!(!Goal::new("z", f64::NAN, Cmp::AtMost, 1.0, "").pass);
    }
}
