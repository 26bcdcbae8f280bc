//! The report as one self-contained HTML page (tables repeat their headings when printed).
use std::fmt::Write;

use super::aggregate::Verdict;
use super::document::{Block, Document};

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

pub fn render(doc: &Document) -> String {
    let mut out = String::new();
    let title = escape(&doc.title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font-family:'DejaVu Sans',sans-serif;font-size:10pt;margin:2em}}\
         table{{border-collapse:collapse;margin:.5em 0}}th,td{{border:1px solid #999;padding:2px 6px;text-align:left;vertical-align:top}}\
         thead{{display:table-header-group}}th{{background:#eee}}\
         .passed{{border:3px solid #2a7;padding:.5em}}.failed{{border:3px solid #c22;padding:.5em}}</style></head><body>\n<h1>{title}</h1>\n"
    );
    for line in &doc.subtitle {
        let _ = writeln!(out, "<p>{}</p>", escape(line));
    }
    let class = match doc.verdict {
        Verdict::Passed => "passed",
        Verdict::Failed => "failed",
    };
    let _ = write!(out, "<div class=\"{class}\">");
    for (i, line) in doc.verdict_lines.iter().enumerate() {
        let line = escape(line);
        let _ = if i == 0 { writeln!(out, "<h2>{line}</h2>") } else { writeln!(out, "<p>{line}</p>") };
    }
    out.push_str("</div>\n");
    for section in &doc.sections {
        let _ = writeln!(out, "<h2>{}</h2>", escape(&section.heading));
        for block in &section.blocks {
            match block {
                Block::Paragraph(text) => {
                    let _ = writeln!(out, "<p>{}</p>", escape(text));
                }
                Block::Table { columns, rows } => {
                    out.push_str("<table><thead><tr>");
                    for (heading, _) in columns {
                        let _ = write!(out, "<th>{}</th>", escape(heading));
                    }
                    out.push_str("</tr></thead><tbody>\n");
                    for row in rows {
                        out.push_str("<tr>");
                        for cell in row {
                            let _ = write!(out, "<td>{}</td>", escape(cell));
                        }
                        out.push_str("</tr>\n");
                    }
                    out.push_str("</tbody></table>\n");
                }
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}
