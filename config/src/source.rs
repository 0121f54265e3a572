//! The raw TOML text with its spans: turns TOML paths into lines and expands `${ENV}` references.

use crate::error::ConfigError;
use std::ops::Range;
use toml_edit::{Document, Item, Value};

/// One step of a TOML path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A key in a table or inline table.
    Key(String),
    /// An index in an array or array of tables.
    Index(usize),
}

/// Renders a path the way users write it in TOML: `exporters.file.queue.max_items`, `x[0]`.
pub fn render_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    && !k.is_empty()
                {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Parsed TOML text that remembers where everything stands.
pub struct Source {
    file: String,
    text: String,
    doc: Document<String>,
}

impl Source {
    /// Parses TOML text; a syntax error comes back with its line and column.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        match Document::parse(text.to_owned()) {
            Ok(doc) => Ok(Self {
                file: file.to_owned(),
                text: text.to_owned(),
                doc,
            }),
            Err(e) => {
                let (line, column) = e
                    .span()
                    .map(|s| line_col(text, s.start))
                    .map_or((None, None), |(l, c)| (Some(l), Some(c)));
                Err(ConfigError {
                    file: file.to_owned(),
                    path: None,
                    line,
                    column,
                    message: format!("TOML syntax error: {}", e.message().trim()),
                })
            }
        }
    }

    /// The file name errors carry.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Builds an error at `path`, with the line of the deepest part of the path that exists.
    pub fn error_at(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        let line = self.locate(path).map(|r| line_col(&self.text, r.start).0);
        ConfigError {
            file: self.file.clone(),
            path: Some(render_path(path)),
            line,
            column: None,
            message: message.into(),
        }
    }

    /// Byte range of the key (or value) at `path`, or of its deepest existing ancestor.
    pub fn locate(&self, path: &[Seg]) -> Option<Range<usize>> {
        enum Cur<'a> {
            Table(&'a dyn toml_edit::TableLike),
            Aot(&'a toml_edit::ArrayOfTables),
            Value(&'a Value),
        }
        fn from_item(item: &Item) -> Option<Cur<'_>> {
            match item {
                Item::Table(t) => Some(Cur::Table(t)),
                Item::ArrayOfTables(a) => Some(Cur::Aot(a)),
                Item::Value(v) => Some(Cur::Value(v)),
                Item::None => None,
            }
        }
        let mut cur = Cur::Table(self.doc.as_table());
        let mut found: Option<Range<usize>> = None;
        for seg in path {
            let next = match (seg, &cur) {
                (Seg::Key(k), Cur::Table(t)) => t.get_key_value(k).and_then(|(key, item)| {
                    found = key.span().or_else(|| item.span()).or(found.clone());
                    from_item(item)
                }),
                (Seg::Key(k), Cur::Value(Value::InlineTable(t))) => {
                    t.get_key_value(k).and_then(|(key, item)| {
                        found = key.span().or_else(|| item.span()).or(found.clone());
                        from_item(item)
                    })
                }
                (Seg::Index(i), Cur::Aot(a)) => a.get(*i).map(|t| {
                    found = t.span().or(found.clone());
                    Cur::Table(t as &dyn toml_edit::TableLike)
                }),
                (Seg::Index(i), Cur::Value(Value::Array(a))) => a.get(*i).map(|v| {
                    found = v.span().or(found.clone());
                    Cur::Value(v)
                }),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                None => break,
            }
        }
        found
    }

    /// Expands `${NAME}` and `${NAME:-default}` inside every string value (`$${` writes a literal
    /// `${`) and returns the new text; line structure is kept so later errors still point right.
    pub fn interpolate(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, Vec<ConfigError>> {
        let mut strings = Vec::new();
        collect_strings_item(self.doc.as_item(), &mut Vec::new(), &mut strings);
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        let mut errors = Vec::new();
        for (path, span, raw) in strings {
            if !raw.contains('$') {
                continue;
            }
            match expand(&raw, env) {
                Ok(new) if new != raw => edits.push((span, encode_basic_string(&new))),
                Ok(_) => {}
                Err(msg) => errors.push(self.error_at(&path, msg)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
        let mut text = self.text.clone();
        for (range, rep) in edits {
            text.replace_range(range, &rep);
        }
        Ok(text)
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |p| before.len() - p - 1)
        + 1;
    (line, col)
}

type Found = (Vec<Seg>, Range<usize>, String);

fn collect_strings_item(item: &Item, path: &mut Vec<Seg>, out: &mut Vec<Found>) {
    match item {
        Item::Value(v) => collect_strings_value(v, path, out),
        Item::Table(t) => {
            for (k, v) in t.iter() {
                path.push(Seg::Key(k.to_owned()));
                collect_strings_item(v, path, out);
                path.pop();
            }
        }
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                for (k, v) in t.iter() {
                    path.push(Seg::Key(k.to_owned()));
                    collect_strings_item(v, path, out);
                    path.pop();
                }
                path.pop();
            }
        }
        Item::None => {}
    }
}

fn collect_strings_value(v: &Value, path: &mut Vec<Seg>, out: &mut Vec<Found>) {
    match v {
        Value::String(s) => {
            if let Some(span) = s.span() {
                out.push((path.clone(), span, s.value().clone()));
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                collect_strings_value(v, path, out);
                path.pop();
            }
        }
        Value::InlineTable(t) => {
            for (k, v) in t.iter() {
                path.push(Seg::Key(k.to_owned()));
                collect_strings_value(v, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Expands environment references in one string.
pub fn expand(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
            continue;
        }
        let Some(body_start) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err(format!(
                "unterminated environment reference in {raw:?}; expected ${{NAME}} or ${{NAME:-default}}"
            ));
        };
        let body = &body_start[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "invalid environment variable name {name:?} in {raw:?}; names use letters, digits and _"
            ));
        }
        match (
            env(name).filter(|v| default.is_none() || !v.is_empty()),
            default,
        ) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set; set it or write ${{{name}:-default}}"
                ))
            }
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn encode_basic_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("ch.local".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("a\"b".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_default_and_escape() {
        assert_eq!(
            expand("http://${HOST}:8123", &env).as_deref(),
            Ok("http://ch.local:8123")
        );
        assert_eq!(expand("${NOPE:-x}", &env).as_deref(), Ok("x"));
        assert_eq!(expand("${EMPTY:-d}", &env).as_deref(), Ok("d"));
        assert_eq!(expand("$${HOST}", &env).as_deref(), Ok("${HOST}"));
        assert_eq!(expand("cost $5", &env).as_deref(), Ok("cost $5"));
        assert!(expand("${NOPE}", &env)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(expand("${HOST", &env).is_err());
    }

    #[test]
    fn interpolation_keeps_lines_and_escapes() {
        let text = "[a]\nx = \"${QUOTE}\"\ny = 1\n";
        let src = Source::parse("t.toml", text).unwrap();
        let out = src.interpolate(&env).unwrap();
        assert_eq!(out, "[a]\nx = \"a\\\"b\"\ny = 1\n");
    }

    #[test]
    fn locates_nested_keys() {
        let text = "[exporters.f]\ntype = \"file\"\nqueue = { max_items = 5 }\n";
        let src = Source::parse("t.toml", text).unwrap();
        let e = src.error_at(
            &[
                Seg::Key("exporters".into()),
                Seg::Key("f".into()),
                Seg::Key("queue".into()),
                Seg::Key("max_items".into()),
            ],
            "bad",
        );
        assert_eq!(e.line, Some(3));
        assert_eq!(e.path.as_deref(), Some("exporters.f.queue.max_items"));
    }
}
