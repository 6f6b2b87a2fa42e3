//! The report artifact: `report.html` and `report.md` side by side, with the figures in
//! `plots/`.

pub const HTML_FILE: &str = "report.html";
pub const MARKDOWN_FILE: &str = "report.md";
pub const PLOTS_DIR: &str = "plots";
