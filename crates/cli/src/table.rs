//! The text tables of the CLI's reports (`bench`, `eval`/`report`, `run`, `kernels`): one style for all,
//! Markdown-like pipes in plain ASCII and no colours, so a table reads the same in a terminal, a log file
//! and a pasted note. Cells never wrap: a log line is never cut to a terminal's width.

use comfy_table::{presets::ASCII_MARKDOWN, CellAlignment, ContentArrangement, Table};

/// How a column's cells sit: labels to the left, numbers to the right (so their digits line up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// An empty table with these column headers and alignments; rows go in with [`Table::add_row`].
pub fn with_header<S: ToString>(columns: &[(S, Align)]) -> Table {
    let mut t = Table::new();
    t.load_style(ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|(h, _)| h.to_string()).collect::<Vec<_>>());
    for (i, (_, align)) in columns.iter().enumerate() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(match align {
                Align::Left => CellAlignment::Left,
                Align::Right => CellAlignment::Right,
            });
        }
    }
    t
}

/// The table's lines, each ending in a newline (no trailing spaces).
pub fn render(t: &Table) -> String {
    t.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_right_labels_left_plain_ascii() {
        let mut t = with_header(&[("name", Align::Left), ("value", Align::Right)]);
        t.add_row(vec!["a", "1.5"]);
        t.add_row(vec!["longer name", "123.25"]);
        let s = render(&t);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4, "header, separator, two rows:\n{s}");
        assert!(lines[0].starts_with("| name ") && lines[0].contains(" value |"), "{s}");
        assert!(lines[1].chars().all(|c| "|-".contains(c)), "{s}");
        // every line is as wide as the others: the columns line up
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{s}");
        // the number's last digit sits at the column's right edge, the label at its left
        assert!(lines[2].starts_with("| a ") && lines[2].ends_with("    1.5 |"), "{s}");
        assert!(lines[3].ends_with(" 123.25 |"), "{s}");
        assert!(s.is_ascii() && !s.contains('\x1b'), "no colours or box drawing:\n{s}");
    }
}
