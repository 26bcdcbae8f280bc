//! The report as PDF (printpdf): A4, DejaVu Sans Mono embedded from the build (same output on every host),
//! real text, a title page with the verdict, tables that break across pages and repeat their headings,
//! page numbers.
use printpdf::{
    Color, IndirectFontRef, Line, Mm, PdfDocument, PdfDocumentReference, PdfLayerIndex, PdfPageIndex, Point,
    Rgb,
};

use super::aggregate::Verdict;
use super::document::{Block, Document};

const REGULAR: &[u8] = include_bytes!("../../fonts/DejaVuSansMono.ttf");
const BOLD: &[u8] = include_bytes!("../../fonts/DejaVuSansMono-Bold.ttf");

const PAGE_W: f32 = 210.0;
const PAGE_H: f32 = 297.0;
const MARGIN: f32 = 15.0;
const BODY_PT: f32 = 8.0;
/// Tables are set smaller, so that paths and hashes fit their columns more often.
const TABLE_PT: f32 = 7.0;
/// DejaVu Sans Mono advances every glyph by 1233/2048 em.
const ADVANCE_EM: f32 = 1233.0 / 2048.0;
const PT_MM: f32 = 25.4 / 72.0;

fn line_height(pt: f32) -> f32 {
    pt * PT_MM * 1.3
}

/// Characters of `pt`-sized text that fit in `width` mm.
fn chars_in(width: f32, pt: f32) -> usize {
    (width / (pt * PT_MM * ADVANCE_EM)).floor() as usize
}

#[derive(Debug, thiserror::Error)]
#[error("writing the PDF: {0}")]
pub struct PdfError(String);

/// Splits `text` into lines of at most `width` characters, at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in clean.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        let used = current.chars().count();
        if used > 0 && used + 1 + word.len() <= width {
            current.push(' ');
            current.extend(word.iter());
            continue;
        }
        if used > 0 {
            lines.push(std::mem::take(&mut current));
        }
        while word.len() > width {
            lines.push(word.drain(..width).collect());
        }
        current = word.into_iter().collect();
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

struct Writer {
    doc: PdfDocumentReference,
    regular: IndirectFontRef,
    bold: IndirectFontRef,
    pages: Vec<(PdfPageIndex, PdfLayerIndex)>,
    /// Distance of the next line's baseline from the bottom of the page.
    y: f32,
}

impl Writer {
    fn layer(&self) -> printpdf::PdfLayerReference {
        let (page, layer) = self.pages[self.pages.len() - 1];
        self.doc.get_page(page).get_layer(layer)
    }

    fn new_page(&mut self) {
        let (page, layer) = self.doc.add_page(Mm(PAGE_W), Mm(PAGE_H), "text");
        self.pages.push((page, layer));
        self.y = PAGE_H - MARGIN;
    }

    /// Makes room for `height` mm, on a new page if this one is full; true if a page was begun.
    fn room(&mut self, height: f32) -> bool {
        if self.y - height < MARGIN + 8.0 {
            self.new_page();
            return true;
        }
        false
    }

    fn text_at(&self, text: &str, pt: f32, x: f32, bold: bool) {
        let font = if bold { &self.bold } else { &self.regular };
        self.layer().use_text(text, pt, Mm(x), Mm(self.y), font);
    }

    fn paragraph(&mut self, text: &str, pt: f32, bold: bool) {
        let lh = line_height(pt);
        for line in wrap(text, chars_in(PAGE_W - 2.0 * MARGIN, pt)) {
            self.room(lh);
            self.y -= lh;
            self.text_at(&line, pt, MARGIN, bold);
        }
    }

    fn rule(&self, y: f32, color: (f32, f32, f32), thickness: f32) {
        let layer = self.layer();
        layer.set_outline_color(Color::Rgb(Rgb::new(color.0, color.1, color.2, None)));
        layer.set_outline_thickness(thickness);
        layer.add_line(Line {
            points: vec![
                (Point::new(Mm(MARGIN), Mm(y)), false),
                (Point::new(Mm(PAGE_W - MARGIN), Mm(y)), false),
            ],
            is_closed: false,
        });
    }

    fn table_row(&mut self, cells: &[Vec<String>], xs: &[f32], bold: bool) {
        let lh = line_height(TABLE_PT);
        let height = cells.iter().map(Vec::len).max().unwrap_or(1);
        for i in 0..height {
            self.y -= lh;
            for (cell, x) in cells.iter().zip(xs) {
                if let Some(line) = cell.get(i) {
                    self.text_at(line, TABLE_PT, *x, bold);
                }
            }
        }
    }

    fn table(&mut self, columns: &[(&str, usize)], rows: &[Vec<String>]) {
        let total: usize = columns.iter().map(|c| c.1).sum::<usize>().max(1);
        let width = PAGE_W - 2.0 * MARGIN;
        let mut xs = Vec::new();
        let mut chars = Vec::new();
        let mut x = MARGIN;
        for (_, share) in columns {
            let w = width * *share as f32 / total as f32;
            xs.push(x);
            chars.push(chars_in(w, TABLE_PT).saturating_sub(1).max(3));
            x += w;
        }
        let lh = line_height(TABLE_PT);
        let header: Vec<Vec<String>> = columns.iter().zip(&chars).map(|((h, _), w)| wrap(h, *w)).collect();
        let header_lines = header.iter().map(Vec::len).max().unwrap_or(1) as f32;
        let draw_header = |w: &mut Writer| {
            w.table_row(&header, &xs, true);
            w.rule(w.y - 1.0, (0.3, 0.3, 0.3), 0.5);
            w.y -= 1.2;
        };
        self.room((header_lines + 1.0) * lh + 2.0);
        draw_header(self);
        for row in rows {
            let cells: Vec<Vec<String>> = row.iter().zip(&chars).map(|(c, w)| wrap(c, *w)).collect();
            let lines = cells.iter().map(Vec::len).max().unwrap_or(1) as f32;
            if self.room(lines * lh + 0.8) {
                draw_header(self);
            }
            self.table_row(&cells, &xs, false);
            self.y -= 0.8;
        }
        self.y -= lh / 2.0;
    }
}

/// Renders `doc` to PDF bytes.
pub fn render(doc: &Document) -> Result<Vec<u8>, PdfError> {
    let (pdf, page, layer) = PdfDocument::new(&doc.title, Mm(PAGE_W), Mm(PAGE_H), "text");
    let err = |e: printpdf::Error| PdfError(e.to_string());
    let regular = pdf.add_external_font(REGULAR).map_err(err)?;
    let bold = pdf.add_external_font(BOLD).map_err(err)?;
    let mut w = Writer { doc: pdf, regular, bold, pages: vec![(page, layer)], y: PAGE_H - MARGIN };

    // Title page: what, when, and the verdict.
    w.y -= 20.0;
    w.paragraph(&doc.title, 20.0, true);
    w.y -= 4.0;
    for line in &doc.subtitle {
        w.paragraph(line, 10.0, false);
    }
    w.y -= 10.0;
    let color = match doc.verdict {
        Verdict::Passed => (0.1, 0.5, 0.2),
        Verdict::Failed => (0.8, 0.1, 0.1),
    };
    let top = w.y;
    for (i, line) in doc.verdict_lines.iter().enumerate() {
        let (pt, bold) = if i == 0 { (14.0, true) } else { (9.0, false) };
        w.paragraph(line, pt, bold);
    }
    w.y -= 3.0;
    w.rule(top + 2.0, color, 2.0);
    w.rule(w.y, color, 2.0);

    for section in &doc.sections {
        w.new_page();
        w.paragraph(&section.heading, 14.0, true);
        w.y -= 2.0;
        for block in &section.blocks {
            match block {
                Block::Paragraph(text) => {
                    w.paragraph(text, BODY_PT + 1.0, false);
                    w.y -= 1.5;
                }
                Block::Table { columns, rows } => w.table(columns, rows),
            }
        }
    }

    let count = w.pages.len();
    for (i, (page, layer)) in w.pages.iter().enumerate() {
        let footer = format!("{} - page {} of {count}", doc.title, i + 1);
        w.doc.get_page(*page).get_layer(*layer).use_text(
            footer,
            7.0,
            Mm(MARGIN),
            Mm(MARGIN - 5.0),
            &w.regular,
        );
    }
    w.doc.save_to_bytes().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_every_character_and_the_width() {
        let text = "a denial of /home/agent/a/very/long/path/that/does/not/fit and more words";
        let lines = wrap(text, 12);
        assert!(lines.iter().all(|l| l.chars().count() <= 12), "{lines:?}");
        assert_eq!(lines.join("").replace(' ', ""), text.replace(' ', ""));
        assert_eq!(wrap("", 5), [""]);
    }
}
