//! Document parsers: PDF (text layer, pages), DOCX (paragraphs, tables), HTML (main text),
//! Markdown (YAML front matter), TXT and CSV (rows with their header).
//!
//! Every parser turns a file into [`Block`]s that keep the document's structure (headings,
//! paragraphs, list items, table rows) for the chunker. Parsers never panic on bad input: the
//! PDF library is additionally run under `catch_unwind` because malformed PDFs can trip it.

use crate::RagError;
use serde_json::{Map, Value};
use std::io::Read;
use std::path::Path;

/// Limits that keep bad files from exhausting memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file accepted, in bytes (checked before reading).
    pub max_file_bytes: u64,
    /// Largest decompressed XML part of a DOCX, in bytes (zip-bomb guard).
    pub max_unzipped_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_file_bytes: 64 << 20, max_unzipped_bytes: 64 << 20 }
    }
}

/// What a block is, structurally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// A heading (starts a section).
    Heading,
    /// A paragraph of running text.
    Paragraph,
    /// A list item.
    ListItem,
    /// One table row (CSV row, DOCX/HTML/Markdown table row).
    TableRow,
}

/// A structural unit of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Heading, paragraph, list item or table row.
    pub kind: BlockKind,
    /// The text.
    pub text: String,
    /// The heading path this block sits under ("Title > Section").
    pub section: String,
    /// 1-based page number for paged formats (PDF).
    pub page: Option<u32>,
    /// For table rows: the table's header row, repeated at the top of every chunk holding rows.
    pub header: Option<String>,
}

/// A parsed document.
#[derive(Debug, Clone, Default)]
pub struct ParsedDoc {
    /// Title (front matter, `<title>`, document properties or first heading).
    pub title: Option<String>,
    /// Metadata from the document itself (YAML front matter, DOCX properties).
    pub meta: Map<String, Value>,
    /// The structure, in order.
    pub blocks: Vec<Block>,
    /// Notes about how the file was read (e.g. "decoded from windows-1251").
    pub notes: Vec<String>,
}

/// The formats the parser knows, by extension.
pub const SUPPORTED_EXTENSIONS: &[&str] = &["pdf", "docx", "html", "htm", "md", "markdown", "txt", "text", "csv"];

/// True when the file's extension is one the parsers handle.
pub fn is_supported(path: &Path) -> bool {
    ext(path).map(|e| SUPPORTED_EXTENSIONS.contains(&e.as_str())).unwrap_or(false)
}

fn ext(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase())
}

fn bad(path: &Path, reason: impl Into<String>) -> RagError {
    RagError::Parse { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads and parses one file, enforcing `limits`.
pub fn parse_file(path: &Path, limits: &Limits) -> Result<(ParsedDoc, Vec<u8>), RagError> {
    let e = ext(path).unwrap_or_default();
    if !SUPPORTED_EXTENSIONS.contains(&e.as_str()) {
        return Err(RagError::Unsupported { path: path.to_path_buf(), ext: e });
    }
    let md = std::fs::metadata(path).map_err(|source| RagError::Io { path: path.to_path_buf(), source })?;
    if md.len() > limits.max_file_bytes {
        return Err(RagError::TooLarge { path: path.to_path_buf(), size: md.len(), limit: limits.max_file_bytes });
    }
    let bytes = std::fs::read(path).map_err(|source| RagError::Io { path: path.to_path_buf(), source })?;
    let doc = parse_bytes(path, &bytes, limits)?;
    Ok((doc, bytes))
}

/// Parses file contents; the format is chosen by `path`'s extension.
pub fn parse_bytes(path: &Path, bytes: &[u8], limits: &Limits) -> Result<ParsedDoc, RagError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(bad(path, "the file is empty"));
    }
    let mut doc = match ext(path).unwrap_or_default().as_str() {
        "pdf" => parse_pdf(path, bytes)?,
        "docx" => parse_docx(path, bytes, limits)?,
        "html" | "htm" => {
            let (text, note) = decode_text(path, bytes)?;
            let mut d = parse_html(&text);
            d.notes.extend(note);
            d
        }
        "md" | "markdown" => {
            let (text, note) = decode_text(path, bytes)?;
            let mut d = parse_markdown(path, &text)?;
            d.notes.extend(note);
            d
        }
        "txt" | "text" => {
            let (text, note) = decode_text(path, bytes)?;
            let mut d = parse_txt(&text);
            d.notes.extend(note);
            d
        }
        "csv" => {
            let (text, note) = decode_text(path, bytes)?;
            let mut d = parse_csv(path, &text)?;
            d.notes.extend(note);
            d
        }
        other => return Err(RagError::Unsupported { path: path.to_path_buf(), ext: other.to_string() }),
    };
    doc.blocks.retain(|b| !b.text.trim().is_empty());
    if doc.blocks.is_empty() {
        return Err(bad(path, "no text found (empty document, or a PDF without a text layer)"));
    }
    Ok(doc)
}

/// Decodes text: UTF-8 (with or without BOM), UTF-16 with BOM, or Windows-1251 when the bytes
/// are not UTF-8 but read as Cyrillic text. Binary data is rejected.
pub fn decode_text(path: &Path, bytes: &[u8]) -> Result<(String, Option<String>), RagError> {
    if let Some((enc, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, had_errors) = enc.decode_without_bom_handling(&bytes[bom_len..]);
        if had_errors {
            return Err(bad(path, format!("invalid {} text", enc.name())));
        }
        return Ok((text.into_owned(), (enc != encoding_rs::UTF_8).then(|| format!("decoded from {}", enc.name()))));
    }
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let controls = head.iter().filter(|&&b| b == 0 || (b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c))).count();
    if head.contains(&0) || controls * 100 > head.len().max(1) {
        return Err(bad(path, "binary content, not text (NUL/control bytes)"));
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Ok((s.to_string(), None));
    }
    // Not UTF-8: try Windows-1251, accepting it only if the non-ASCII characters are letters.
    let (text, _, _) = encoding_rs::WINDOWS_1251.decode(bytes);
    let non_ascii: Vec<char> = text.chars().filter(|c| !c.is_ascii()).collect();
    let cyr = non_ascii.iter().filter(|c| matches!(**c, 'А'..='я' | 'Ё' | 'ё' | '«' | '»' | '—' | '–' | '№')).count();
    if !non_ascii.is_empty() && cyr * 100 >= non_ascii.len() * 90 {
        return Ok((text.into_owned(), Some("decoded from windows-1251".into())));
    }
    Err(bad(path, "not UTF-8 text, and not Windows-1251 Cyrillic either; convert it to UTF-8"))
}

fn push_para_blocks(blocks: &mut Vec<Block>, text: &str, section: &str, page: Option<u32>) {
    for para in split_paragraphs(text) {
        blocks.push(Block { kind: BlockKind::Paragraph, text: para, section: section.to_string(), page, header: None });
    }
}

/// Splits text on blank lines, joining wrapped lines of one paragraph with spaces.
fn split_paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() {
            if !cur.is_empty() {
                out.push(cur.join(" "));
                cur.clear();
            }
        } else {
            cur.push(l);
        }
    }
    if !cur.is_empty() {
        out.push(cur.join(" "));
    }
    out
}

/// Plain text: paragraphs separated by blank lines; a short line ending in "?" or ":"
/// followed by text is kept with its answer (FAQ style) because paragraphs are kept whole.
pub fn parse_txt(text: &str) -> ParsedDoc {
    let mut blocks = Vec::new();
    let paras = split_paragraphs(text);
    let title = paras.first().filter(|p| p.chars().count() <= 120).cloned();
    for p in paras {
        blocks.push(Block { kind: BlockKind::Paragraph, text: p, section: String::new(), page: None, header: None });
    }
    ParsedDoc { title, blocks, ..Default::default() }
}

/// CSV: every row becomes a table-row block rendered as `column: value; …` and keeps the
/// header, so a chunk of rows always says what its columns are. Read with a streaming reader.
pub fn parse_csv(path: &Path, text: &str) -> Result<ParsedDoc, RagError> {
    let delim = sniff_delimiter(text);
    let mut rdr = csv::ReaderBuilder::new().delimiter(delim).flexible(true).from_reader(text.as_bytes());
    let headers: Vec<String> = rdr.headers().map_err(|e| bad(path, format!("CSV header: {e}")))?.iter().map(|h| h.trim().to_string()).collect();
    let header_line = headers.join(" | ");
    let mut blocks = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| bad(path, format!("CSV row {}: {e}", i + 2)))?;
        let cells: Vec<String> = rec
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(j, v)| match headers.get(j) {
                Some(h) if !h.is_empty() => format!("{h}: {}", v.trim()),
                _ => v.trim().to_string(),
            })
            .collect();
        if cells.is_empty() {
            continue;
        }
        blocks.push(Block { kind: BlockKind::TableRow, text: cells.join("; "), section: String::new(), page: None, header: Some(header_line.clone()) });
    }
    if blocks.is_empty() {
        return Err(bad(path, "CSV has a header but no rows"));
    }
    Ok(ParsedDoc { blocks, ..Default::default() })
}

fn sniff_delimiter(text: &str) -> u8 {
    let first = text.lines().next().unwrap_or("");
    [b',', b';', b'\t', b'|'].into_iter().max_by_key(|d| first.bytes().filter(|b| b == d).count()).unwrap_or(b',')
}

/// Splits YAML front matter (`---` … `---` at the very top) from Markdown.
fn split_front_matter(text: &str) -> (Option<&str>, &str) {
    let t = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = t.strip_prefix("---").filter(|r| r.starts_with('\n') || r.starts_with("\r\n")) else {
        return (None, t);
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if offset > 0 && (line.trim_end() == "---" || line.trim_end() == "...") {
            return (Some(&rest[..offset]), &rest[offset + line.len()..]);
        }
        offset += line.len();
    }
    (None, t)
}

fn yaml_to_json(v: serde_yaml::Value) -> Value {
    match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(f) = n.as_f64() {
                serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
            } else {
                Value::String(n.to_string())
            }
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(s) => Value::Array(s.into_iter().map(yaml_to_json).collect()),
        serde_yaml::Value::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        serde_yaml::Value::String(s) => s,
                        other => serde_yaml::to_string(&other).unwrap_or_default().trim().to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        serde_yaml::Value::Tagged(t) => yaml_to_json(t.value),
    }
}

/// Markdown with optional YAML front matter (its keys become metadata; `title`, `id`,
/// `version`, `date` have meaning for versions).
pub fn parse_markdown(path: &Path, text: &str) -> Result<ParsedDoc, RagError> {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let (fm, body) = split_front_matter(text);
    let mut meta = Map::new();
    if let Some(fm) = fm {
        let v: serde_yaml::Value = serde_yaml::from_str(fm).map_err(|e| bad(path, format!("YAML front matter: {e}")))?;
        match yaml_to_json(v) {
            Value::Object(m) => meta = m,
            Value::Null => {}
            _ => return Err(bad(path, "YAML front matter is not a mapping of keys to values")),
        }
    }
    let mut blocks = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut buf = String::new();
    let mut in_heading: Option<usize> = None;
    let mut table_row: Vec<String> = Vec::new();
    let mut table_header: Option<String> = None;
    let mut in_table_head = false;
    let mut list_depth = 0usize;
    let mut first_h1: Option<String> = None;
    let section = |h: &Vec<(usize, String)>| h.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" > ");
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    for ev in Parser::new_ext(body, opts) {
        match ev {
            Event::Start(Tag::Heading { level, .. }) => {
                buf.clear();
                in_heading = Some(level as usize);
            }
            Event::End(TagEnd::Heading(_)) => {
                let level = in_heading.take().unwrap_or(1);
                let t = buf.trim().to_string();
                buf.clear();
                if level == 1 && first_h1.is_none() {
                    first_h1 = Some(t.clone());
                }
                headings.retain(|(l, _)| *l < level);
                headings.push((level, t.clone()));
                blocks.push(Block { kind: BlockKind::Heading, text: t, section: section(&headings), page: None, header: None });
            }
            Event::Start(Tag::Item) => {
                list_depth += 1;
                if !buf.trim().is_empty() {
                    // Text of an outer item before a nested list.
                    blocks.push(Block { kind: BlockKind::ListItem, text: format!("- {}", buf.trim()), section: section(&headings), page: None, header: None });
                }
                buf.clear();
            }
            Event::End(TagEnd::Item) => {
                list_depth = list_depth.saturating_sub(1);
                if !buf.trim().is_empty() {
                    blocks.push(Block { kind: BlockKind::ListItem, text: format!("- {}", buf.trim()), section: section(&headings), page: None, header: None });
                }
                buf.clear();
            }
            Event::End(TagEnd::Paragraph) if list_depth == 0 => {
                push_para_blocks(&mut blocks, &buf, &section(&headings), None);
                buf.clear();
            }
            Event::End(TagEnd::Paragraph) => buf.push(' '),
            Event::End(TagEnd::CodeBlock) | Event::End(TagEnd::BlockQuote(_)) => {
                push_para_blocks(&mut blocks, &buf, &section(&headings), None);
                buf.clear();
            }
            Event::Start(Tag::TableHead) => {
                in_table_head = true;
                table_row.clear();
            }
            Event::End(TagEnd::TableHead) => {
                in_table_head = false;
                table_header = Some(table_row.join(" | "));
                table_row.clear();
            }
            Event::Start(Tag::TableRow) => table_row.clear(),
            Event::End(TagEnd::TableCell) => {
                table_row.push(buf.trim().to_string());
                buf.clear();
            }
            Event::End(TagEnd::TableRow) if !in_table_head => {
                let text = row_text(table_header.as_deref(), &table_row);
                blocks.push(Block { kind: BlockKind::TableRow, text, section: section(&headings), page: None, header: table_header.clone() });
                table_row.clear();
            }
            Event::End(TagEnd::Table) => table_header = None,
            Event::Text(t) | Event::Code(t) => buf.push_str(&t),
            Event::SoftBreak => buf.push(' '),
            Event::HardBreak => buf.push('\n'),
            _ => {}
        }
    }
    if !buf.trim().is_empty() {
        push_para_blocks(&mut blocks, &buf, &section(&headings), None);
    }
    let title = meta.get("title").and_then(|v| v.as_str()).map(str::to_string).or(first_h1);
    Ok(ParsedDoc { title, meta, blocks, notes: Vec::new() })
}

/// A table row as text: `header: cell` pairs when the header is known.
fn row_text(header: Option<&str>, cells: &[String]) -> String {
    match header {
        Some(h) => {
            let names: Vec<&str> = h.split(" | ").collect();
            cells
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.is_empty())
                .map(|(i, c)| match names.get(i) {
                    Some(n) if !n.is_empty() => format!("{n}: {c}"),
                    _ => c.clone(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        }
        None => cells.join(" | "),
    }
}

/// HTML: the main content (`<article>`, `<main>`, `[role=main]` or `<body>`), without
/// navigation, headers, footers, asides, forms, scripts and styles.
pub fn parse_html(text: &str) -> ParsedDoc {
    use scraper::{ElementRef, Html, Selector};
    let html = Html::parse_document(text);
    let pick = |sel: &str| Selector::parse(sel).ok().and_then(|s| html.select(&s).next());
    let title = pick("title").map(|t| t.text().collect::<String>().trim().to_string()).filter(|t| !t.is_empty());
    let root = pick("article").or_else(|| pick("main")).or_else(|| pick("[role=main]")).or_else(|| pick("body"));
    let mut doc = ParsedDoc { title, ..Default::default() };
    let Some(root) = root else { return doc };
    const SKIP: &[&str] = &["nav", "footer", "header", "aside", "script", "style", "noscript", "form", "template", "svg", "button"];
    const BLOCK: &[&str] = &["p", "li", "pre", "blockquote", "dd", "dt", "figcaption", "caption", "address"];
    fn text_of(el: ElementRef<'_>, out: &mut String) {
        for child in el.children() {
            if let Some(e) = ElementRef::wrap(child) {
                if SKIP.contains(&e.value().name()) {
                    continue;
                }
                if e.value().name() == "br" {
                    out.push(' ');
                }
                text_of(e, out);
            } else if let Some(t) = child.value().as_text() {
                out.push_str(t);
            }
        }
    }
    fn norm(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }
    struct Walk {
        blocks: Vec<Block>,
        headings: Vec<(usize, String)>,
        first_h: Option<String>,
    }
    fn walk(el: ElementRef<'_>, w: &mut Walk) {
        let name = el.value().name();
        if SKIP.contains(&name) {
            return;
        }
        let section = |h: &Vec<(usize, String)>| h.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" > ");
        if let Some(level) = name.strip_prefix('h').and_then(|l| l.parse::<usize>().ok()).filter(|l| (1..=6).contains(l)) {
            let mut t = String::new();
            text_of(el, &mut t);
            let t = norm(&t);
            if !t.is_empty() {
                if w.first_h.is_none() {
                    w.first_h = Some(t.clone());
                }
                w.headings.retain(|(l, _)| *l < level);
                w.headings.push((level, t.clone()));
                w.blocks.push(Block { kind: BlockKind::Heading, text: t, section: section(&w.headings), page: None, header: None });
            }
            return;
        }
        if name == "table" {
            let mut header: Option<String> = None;
            let tr = scraper::Selector::parse("tr").expect("static selector");
            for row in el.select(&tr) {
                let cells: Vec<String> = row
                    .children()
                    .filter_map(ElementRef::wrap)
                    .filter(|c| matches!(c.value().name(), "td" | "th"))
                    .map(|c| {
                        let mut t = String::new();
                        text_of(c, &mut t);
                        norm(&t)
                    })
                    .collect();
                if cells.is_empty() {
                    continue;
                }
                let is_head = row.children().filter_map(ElementRef::wrap).all(|c| c.value().name() == "th");
                if header.is_none() && is_head {
                    header = Some(cells.join(" | "));
                    continue;
                }
                let text = row_text(header.as_deref(), &cells);
                w.blocks.push(Block { kind: BlockKind::TableRow, text, section: section(&w.headings), page: None, header: header.clone() });
            }
            return;
        }
        if BLOCK.contains(&name) {
            let mut t = String::new();
            text_of(el, &mut t);
            let t = norm(&t);
            if !t.is_empty() {
                let kind = if name == "li" { BlockKind::ListItem } else { BlockKind::Paragraph };
                let text = if kind == BlockKind::ListItem { format!("- {t}") } else { t };
                w.blocks.push(Block { kind, text, section: section(&w.headings), page: None, header: None });
            }
            return;
        }
        // Containers: recurse; loose text directly inside becomes its own paragraph.
        for child in el.children() {
            if let Some(e) = ElementRef::wrap(child) {
                walk(e, w);
            } else if let Some(t) = child.value().as_text() {
                let t = norm(t);
                if !t.is_empty() {
                    w.blocks.push(Block { kind: BlockKind::Paragraph, text: t, section: section(&w.headings), page: None, header: None });
                }
            }
        }
    }
    let mut w = Walk { blocks: Vec::new(), headings: Vec::new(), first_h: None };
    walk(root, &mut w);
    doc.blocks = w.blocks;
    if doc.title.is_none() {
        doc.title = w.first_h;
    }
    doc
}

/// Reads one zip entry, refusing to inflate more than `cap` bytes (zip-bomb guard).
fn read_zip_entry<R: Read + std::io::Seek>(path: &Path, zip: &mut zip::ZipArchive<R>, name: &str, cap: u64) -> Result<Option<Vec<u8>>, RagError> {
    let entry = match zip.by_name(name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(bad(path, format!("DOCX part {name}: {e}"))),
    };
    if entry.encrypted() {
        return Err(bad(path, "the DOCX is encrypted (password-protected)"));
    }
    if entry.size() > cap {
        return Err(bad(path, format!("DOCX part {name} inflates to {} bytes, over the {cap}-byte limit (zip bomb?)", entry.size())));
    }
    let mut out = Vec::new();
    // The declared size can lie: cap what is actually inflated as well.
    entry.take(cap + 1).read_to_end(&mut out).map_err(|e| bad(path, format!("DOCX part {name}: {e}")))?;
    if out.len() as u64 > cap {
        return Err(bad(path, format!("DOCX part {name} inflates past the {cap}-byte limit (zip bomb?)")));
    }
    Ok(Some(out))
}

/// DOCX: paragraphs (heading styles become headings) and tables (one block per row, the first
/// row as header), from `word/document.xml`; the title from `docProps/core.xml`.
pub fn parse_docx(path: &Path, bytes: &[u8], limits: &Limits) -> Result<ParsedDoc, RagError> {
    use quick_xml::events::Event;
    if bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]) {
        return Err(bad(path, "an OLE compound file, not a DOCX: encrypted (password-protected) or a legacy .doc"));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(path, format!("not a valid DOCX (zip): {e}")))?;
    if zip.len() > 10_000 {
        return Err(bad(path, format!("DOCX holds {} parts; refusing (zip bomb?)", zip.len())));
    }
    let xml = read_zip_entry(path, &mut zip, "word/document.xml", limits.max_unzipped_bytes)?
        .ok_or_else(|| bad(path, "not a DOCX: no word/document.xml inside"))?;
    let mut title = None;
    if let Some(core) = read_zip_entry(path, &mut zip, "docProps/core.xml", 1 << 20)? {
        let mut r = quick_xml::Reader::from_reader(core.as_slice());
        let mut in_title = false;
        let mut buf = Vec::new();
        loop {
            match r.read_event_into(&mut buf) {
                Ok(Event::Start(e)) if e.local_name().as_ref() == b"title" => in_title = true,
                Ok(Event::Text(t)) if in_title => {
                    let s = t.decode().map(|c| c.into_owned()).unwrap_or_default();
                    if !s.trim().is_empty() {
                        title = Some(s.trim().to_string());
                    }
                }
                Ok(Event::End(e)) if e.local_name().as_ref() == b"title" => in_title = false,
                Ok(Event::Eof) | Err(_) => break,
                _ => {}
            }
            buf.clear();
        }
    }
    let mut r = quick_xml::Reader::from_reader(xml.as_slice());
    let mut buf = Vec::new();
    let mut blocks = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut para = String::new();
    let mut heading_level: Option<usize> = None;
    let mut in_text = false;
    let mut table_depth = 0usize;
    let mut cell = String::new();
    let mut row: Vec<String> = Vec::new();
    let mut header: Option<String> = None;
    let mut first_row = true;
    let section = |h: &Vec<(usize, String)>| h.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" > ");
    loop {
        let ev = r.read_event_into(&mut buf).map_err(|e| bad(path, format!("word/document.xml at byte {}: {e}", r.buffer_position())))?;
        let self_closing = matches!(ev, Event::Empty(_));
        match ev {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"p" => {
                    para.clear();
                    heading_level = None;
                }
                b"pStyle" => {
                    for a in e.attributes().flatten() {
                        if a.key.local_name().as_ref() == b"val" {
                            let v = String::from_utf8_lossy(&a.value).to_lowercase();
                            if v == "title" {
                                heading_level = Some(1);
                            } else if let Some(n) = v.strip_prefix("heading").or_else(|| v.strip_prefix("заголовок")) {
                                heading_level = Some(n.trim().parse().unwrap_or(1));
                            }
                        }
                    }
                }
                b"t" => in_text = !self_closing,
                b"tab" => para.push('\t'),
                b"br" | b"cr" => para.push(' '),
                b"tbl" => {
                    table_depth += 1;
                    if table_depth == 1 {
                        header = None;
                        first_row = true;
                    }
                }
                b"tr" => row.clear(),
                b"tc" => cell.clear(),
                _ => {}
            },
            Event::Text(t) if in_text => {
                let s = t.decode().map_err(|e| bad(path, format!("word/document.xml text: {e}")))?;
                para.push_str(&s);
            }
            Event::GeneralRef(g) if in_text => {
                let name = g.decode().map(|c| c.into_owned()).unwrap_or_default();
                let ch = match name.as_str() {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    _ => g.resolve_char_ref().ok().flatten(),
                };
                if let Some(c) = ch {
                    para.push(c);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => {
                    let t = para.split_whitespace().collect::<Vec<_>>().join(" ");
                    para.clear();
                    if table_depth > 0 {
                        if !t.is_empty() {
                            if !cell.is_empty() {
                                cell.push(' ');
                            }
                            cell.push_str(&t);
                        }
                    } else if !t.is_empty() {
                        if let Some(level) = heading_level {
                            if title.is_none() {
                                title = Some(t.clone());
                            }
                            headings.retain(|(l, _)| *l < level);
                            headings.push((level, t.clone()));
                            blocks.push(Block { kind: BlockKind::Heading, text: t, section: section(&headings), page: None, header: None });
                        } else {
                            blocks.push(Block { kind: BlockKind::Paragraph, text: t, section: section(&headings), page: None, header: None });
                        }
                    }
                }
                b"tc" => row.push(std::mem::take(&mut cell)),
                b"tr" if table_depth == 1 => {
                    if first_row {
                        header = Some(row.join(" | "));
                        first_row = false;
                    } else if row.iter().any(|c| !c.is_empty()) {
                        let text = row_text(header.as_deref(), &row);
                        blocks.push(Block { kind: BlockKind::TableRow, text, section: section(&headings), page: None, header: header.clone() });
                    }
                    row.clear();
                }
                b"tbl" => table_depth = table_depth.saturating_sub(1),
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(ParsedDoc { title, blocks, ..Default::default() })
}

/// PDF: the text layer, page by page (pages become block metadata). Encrypted PDFs and PDFs
/// the library cannot read are reported, never a panic.
pub fn parse_pdf(path: &Path, bytes: &[u8]) -> Result<ParsedDoc, RagError> {
    if !bytes.starts_with(b"%PDF") {
        return Err(bad(path, "not a PDF (no %PDF header)"));
    }
    let owned = bytes.to_vec();
    let loaded = std::panic::catch_unwind(move || lopdf::Document::load_mem(&owned));
    let doc = match loaded {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Err(bad(path, format!("corrupt PDF: {e}"))),
        Err(_) => return Err(bad(path, "corrupt PDF: the PDF reader failed on it")),
    };
    if doc.is_encrypted() {
        return Err(bad(path, "the PDF is encrypted (password-protected)"));
    }
    let title = doc
        .trailer
        .get(b"Info")
        .ok()
        .and_then(|o| o.as_reference().ok())
        .and_then(|id| doc.get_dictionary(id).ok())
        .and_then(|info| info.get(b"Title").ok())
        .and_then(|t| t.as_str().ok())
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .filter(|t| !t.is_empty() && t.is_ascii());
    let owned = bytes.to_vec();
    let pages = std::panic::catch_unwind(move || pdf_extract::extract_text_from_mem_by_pages(&owned));
    let pages = match pages {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(bad(path, format!("cannot extract the PDF's text: {e}"))),
        Err(_) => return Err(bad(path, "cannot extract the PDF's text: the PDF reader failed on it")),
    };
    let mut blocks = Vec::new();
    for (i, text) in pages.iter().enumerate() {
        push_para_blocks(&mut blocks, text, "", Some(i as u32 + 1));
    }
    let title = title.or_else(|| blocks.first().map(|b| b.text.clone()).filter(|t| t.chars().count() <= 120));
    Ok(ParsedDoc { title, blocks, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_front_matter_headings_tables() {
        let md = "---\ntitle: Тарифы\nversion: 2026-03\n---\n# Тарифы\n\n| Тариф | Цена |\n|---|---|\n| Старт | 1290 ₽ |\n\nТекст абзаца.\n\n- пункт один\n";
        let d = parse_markdown(Path::new("t.md"), md).unwrap();
        assert_eq!(d.title.as_deref(), Some("Тарифы"));
        assert_eq!(d.meta["version"], "2026-03");
        let row = d.blocks.iter().find(|b| b.kind == BlockKind::TableRow).unwrap();
        assert_eq!(row.text, "Тариф: Старт; Цена: 1290 ₽");
        assert_eq!(row.header.as_deref(), Some("Тариф | Цена"));
        assert!(d.blocks.iter().any(|b| b.kind == BlockKind::ListItem && b.text == "- пункт один"));
        assert!(d.blocks.iter().all(|b| b.section.starts_with("Тарифы")));
    }

    #[test]
    fn bad_front_matter_is_an_error() {
        let e = parse_markdown(Path::new("t.md"), "---\ntitle: [unclosed\n---\nbody\n").unwrap_err();
        assert!(e.to_string().contains("front matter"), "{e}");
    }

    #[test]
    fn html_drops_nav_and_footer() {
        let h = "<html><head><title>T</title><script>var x=1;</script></head><body><nav>Меню</nav><article><h1>Заголовок</h1><p>Текст <b>важный</b>.</p></article><footer>©</footer></body></html>";
        let d = parse_html(h);
        let all: Vec<&str> = d.blocks.iter().map(|b| b.text.as_str()).collect();
        assert_eq!(all, vec!["Заголовок", "Текст важный."]);
        assert_eq!(d.title.as_deref(), Some("T"));
    }

    #[test]
    fn csv_rows_keep_header() {
        let d = parse_csv(Path::new("a.csv"), "name;salary\nIvan;100\nPetr;200\n").unwrap();
        assert_eq!(d.blocks.len(), 2);
        assert_eq!(d.blocks[1].text, "name: Petr; salary: 200");
    }

    #[test]
    fn decodes_cp1251_and_rejects_binary() {
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode("Привет, мир! Тарифы и цены.");
        let (t, note) = decode_text(Path::new("a.txt"), &bytes).unwrap();
        assert_eq!(t, "Привет, мир! Тарифы и цены.");
        assert!(note.unwrap().contains("1251"));
        let bin: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 256) as u8).collect();
        let e = decode_text(Path::new("a.txt"), &bin).unwrap_err();
        assert!(e.to_string().contains("binary"), "{e}");
    }

    #[test]
    fn empty_and_unsupported() {
        let e = parse_bytes(Path::new("a.txt"), b"  \n", &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = parse_bytes(Path::new("a.xyz"), b"data", &Limits::default()).unwrap_err();
        assert!(matches!(e, RagError::Unsupported { .. }));
    }

    #[test]
    fn corrupt_pdf_and_docx_are_errors() {
        let e = parse_bytes(Path::new("a.pdf"), b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage", &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("PDF"), "{e}");
        let e = parse_bytes(Path::new("a.docx"), b"PK\x03\x04 not really a zip", &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("DOCX"), "{e}");
    }
}
