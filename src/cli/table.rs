//! Tables aligned like `kubectl get`: upper-case headers, columns three spaces apart, no trailing blanks.

/// A table's header and rows; every row has one cell per header.
pub(super) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// How a value the status does not (yet) report is shown.
pub(super) const UNKNOWN: &str = "-";

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len(), "one cell per column");
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|row| row[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            out.push_str(line.join("   ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// A value or [`UNKNOWN`].
pub(super) fn cell<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| UNKNOWN.to_string(), |v| v.to_string())
}

/// Seconds the way kubectl shows ages: `45s`, `3m20s`, `2h5m`, `3d4h`.
pub(super) fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) if m == 0 => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        _ if h == 0 => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_plus_three_spaces() {
        let mut table = Table::new(&["SITE", "HEALTH", "READY"]);
        table.row(vec!["site-a".into(), "HEALTH_WARN".into(), "True".into()]);
        table.row(vec!["b".into(), cell(None::<String>), "".into()]);
        assert_eq!(
            table.render(),
            "SITE     HEALTH        READY\n\
             site-a   HEALTH_WARN   True\n\
             b        -\n"
        );
    }

    #[test]
    fn durations_read_like_kubectl_ages() {
        let shown: Vec<String> = [0, 45, 180, 200, 3600, 7500, 86400, 273600]
            .into_iter()
            .map(duration)
            .collect();
        assert_eq!(shown, ["0s", "45s", "3m", "3m20s", "1h", "2h5m", "1d", "3d4h"]);
    }
}
