//! Where each key of a TOML document sits: a map from key paths such as
//! `routes[2].match.path_prefix` to the line they are on, built from toml's
//! spanned document so validation can name file, line and key without the
//! config structs carrying spans.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Key paths of a parsed document mapped to the byte span of their key (or,
/// for array elements, of the element).
#[derive(Debug, Default)]
pub struct SpanIndex {
    spans: HashMap<String, Range<usize>>,
    /// Key paths mapped to the byte span of their value.
    values: HashMap<String, Range<usize>>,
    /// Byte offsets of the start of each line.
    line_starts: Vec<usize>,
}

impl SpanIndex {
    /// Indexes `table`, which was parsed from `source`.
    pub fn build(source: &str, table: &Spanned<DeTable<'_>>) -> Self {
        let mut index = SpanIndex {
            spans: HashMap::new(),
            values: HashMap::new(),
            line_starts: std::iter::once(0)
                .chain(source.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        };
        index.walk_table("", table.get_ref());
        index
    }

    /// An index that knows no keys; lines resolve to `None`.
    pub fn empty() -> Self {
        SpanIndex::default()
    }

    fn walk_table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.spans.insert(path.clone(), key.span());
            self.values.insert(path.clone(), value.span());
            self.walk_value(&path, value);
        }
    }

    fn walk_value(&mut self, path: &str, value: &Spanned<DeValue<'_>>) {
        match value.get_ref() {
            DeValue::Table(t) => self.walk_table(path, t),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    self.spans.insert(item_path.clone(), item.span());
                    self.walk_value(&item_path, item);
                }
            }
            _ => {}
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> Option<usize> {
        if self.line_starts.is_empty() {
            return None;
        }
        Some(self.line_starts.partition_point(|&s| s <= offset))
    }

    /// 1-based column of a byte offset.
    pub fn column_of(&self, offset: usize) -> Option<usize> {
        let line = self.line_of(offset)?;
        Some(offset - self.line_starts[line - 1] + 1)
    }

    /// The line of `path`, or of its nearest ancestor that is in the file
    /// (a key left out and defaulted is reported on its table's line).
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(span) = self.spans.get(p) {
                return self.line_of(span.start);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// The deepest key path whose span contains `offset`, to name the key an
    /// error from the deserializer points at.
    pub fn key_at(&self, offset: usize) -> Option<&str> {
        // The deepest path whose key or value contains the offset wins.
        self.spans
            .iter()
            .chain(self.values.iter())
            .filter(|(_, span)| span.start <= offset && offset < span.end.max(span.start + 1))
            .max_by_key(|(path, span)| (path.len(), usize::MAX - (span.end - span.start)))
            .map(|(path, _)| path.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_keys_and_array_tables() {
        let src = "[listen]\nproxy = \"x\"\n\n[[routes]]\nname = \"a\"\nmatch.path = \"/a\"\n\n[[routes]]\nname = \"b\"\nsplit = { m = 100 }\n";
        let table = DeTable::parse(src).unwrap();
        let idx = SpanIndex::build(src, &table);
        assert_eq!(idx.line("listen.proxy"), Some(2));
        assert_eq!(idx.line("routes[0].name"), Some(5));
        assert_eq!(idx.line("routes[0].match.path"), Some(6));
        assert_eq!(idx.line("routes[1].split.m"), Some(10));
        // Missing keys fall back to the nearest ancestor.
        assert_eq!(idx.line("routes[1].split.zzz"), Some(10));
        assert_eq!(idx.line("routes[1].timeout"), idx.line("routes[1]"));
    }
}
