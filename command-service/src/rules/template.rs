//! Text templates such as `W-{asset.tag}-PWR`: literal text with CEL expressions in
//! braces. `{{` and `}}` stand for literal braces.

use super::expression::{AssetContext, EvaluationError, Expression, ExpressionError};
use serde_json::Value;

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Expression(Expression),
}

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Template {
    pub source: String,
    parts: Vec<Part>,
}

/// Most tags [`Template::source_candidates`] offers for one rendered tag.
pub const MAX_SOURCES: usize = 8;

/// Where each occurrence of `text` in `rendered` ends.
fn ends_of(rendered: &str, text: &str) -> Vec<usize> {
    rendered
        .match_indices(text)
        .map(|(start, found)| start + found.len())
        .collect()
}

/// Where each occurrence of `text` in `rendered` starts.
fn starts_of(rendered: &str, text: &str) -> Vec<usize> {
    rendered
        .match_indices(text)
        .map(|(start, _)| start)
        .collect()
}

/// For `asset.tag.replace('A', 'B')`, the tag that became `rendered`: `rendered` with
/// `B` put back to `A`.
fn replaced_tag(source: &str, rendered: &str) -> Option<String> {
    let arguments = source
        .strip_prefix("asset.tag.replace(")?
        .strip_suffix(')')?;
    let quoted = |text: &str| -> Option<String> {
        let text = text.trim();
        let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let inner = text.strip_prefix(quote)?.strip_suffix(quote)?;
        (!inner.contains(quote) && !inner.contains('\\')).then(|| inner.to_owned())
    };
    let (from, to) = arguments.split_once(',')?;
    let (from, to) = (quoted(from)?, quoted(to)?);
    (!to.is_empty() && rendered.contains(&to)).then(|| rendered.replace(&to, &from))
}

impl Template {
    /// Whether the template is the asset's own tag between fixed texts
    /// (`W-{asset.tag}-PWR`): then two assets (whose tags differ) never render the
    /// same.
    pub fn is_own_tag(&self) -> bool {
        let own = |part: &Part| matches!(part, Part::Expression(expression) if expression.source.trim() == "asset.tag");
        let text = |part: &Part| matches!(part, Part::Text(_));
        match self.parts.as_slice() {
            [tag] => own(tag),
            [first, second] => (text(first) && own(second)) || (own(first) && text(second)),
            [before, tag, after] => text(before) && own(tag) && text(after),
            _ => false,
        }
    }

    /// Tags of the assets this template may render `rendered` for, to be checked by
    /// rendering it for each: the asset's own tag where the template names it between
    /// fixed texts (`VFD-{asset.tag}`, `{asset.area}-{asset.tag}`: after each `-`),
    /// or replaces a text in it (`{asset.tag.replace('M-', 'VFD-')}`). At most
    /// [`MAX_SOURCES`]; none for other templates, or for `{asset.tag}` alone (the asset
    /// itself).
    pub fn source_candidates(&self, rendered: &str) -> Vec<String> {
        let own = |part: &Part| matches!(part, Part::Expression(expression) if expression.source.trim() == "asset.tag");
        if let [Part::Expression(expression)] = self.parts.as_slice() {
            return replaced_tag(expression.source.trim(), rendered)
                .into_iter()
                .collect();
        }
        let mut tags = self.parts.iter().enumerate().filter(|(_, part)| own(part));
        let (Some((at, _)), None) = (tags.next(), tags.next()) else {
            return Vec::new();
        };
        // Where the tag may start and end: right after the text before it (or at the
        // start), right before the text after it (or at the end).
        let starts: Vec<usize> = match at.checked_sub(1).map(|before| &self.parts[before]) {
            None => vec![0],
            Some(Part::Text(text)) => ends_of(rendered, text),
            Some(Part::Expression(_)) => return Vec::new(),
        };
        let ends: Vec<usize> = match self.parts.get(at + 1) {
            None => vec![rendered.len()],
            Some(Part::Text(text)) => starts_of(rendered, text),
            Some(Part::Expression(_)) => return Vec::new(),
        };
        let mut candidates = Vec::new();
        for start in starts {
            for end in ends.iter().copied().filter(|end| *end > start) {
                if candidates.len() < MAX_SOURCES {
                    candidates.push(rendered[start..end].to_owned());
                }
            }
        }
        candidates
    }

    /// What the template renders for every asset, if it has no expression in it.
    pub fn constant(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }

    pub fn compile(source: &str, field: &str) -> Result<Self, ExpressionError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((index, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, next)| *next) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|(_, next)| *next) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let start = index + 1;
                    let end = source[start..]
                        .find('}')
                        .map(|offset| start + offset)
                        .ok_or_else(|| ExpressionError {
                            field: field.to_owned(),
                            message: "unclosed `{`: write `{{` for a literal brace".to_owned(),
                            line: Some(position(source, index).0),
                            column: Some(position(source, index).1),
                        })?;
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    let expression =
                        Expression::compile(&source[start..end], field).map_err(|mut error| {
                            // Where it is in the whole template, not in the braces.
                            if let (Some(line), Some(column)) = (error.line, error.column) {
                                let at = start + offset(&source[start..end], line, column);
                                let (line, column) = position(source, at);
                                (error.line, error.column) = (Some(line), Some(column));
                            }
                            error
                        })?;
                    parts.push(Part::Expression(expression));
                    while chars.peek().is_some_and(|(position, _)| *position <= end) {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(ExpressionError {
                        field: field.to_owned(),
                        message: "unmatched `}`: write `}}` for a literal brace".to_owned(),
                        line: Some(position(source, index).0),
                        column: Some(position(source, index).1),
                    })
                }
                other => text.push(other),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// Render for one asset. Strings are inserted as they are, numbers and booleans
    /// in their JSON form; a missing value is an error (never an empty string).
    pub fn render(&self, asset: &AssetContext) -> Result<String, EvaluationError> {
        let mut rendered = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => rendered.push_str(text),
                Part::Expression(expression) => match expression.evaluate(asset)? {
                    Value::String(text) => rendered.push_str(&text),
                    Value::Null => {
                        return Err(EvaluationError(format!(
                            "`{}` is null in template `{}`",
                            expression.source, self.source
                        )))
                    }
                    other => rendered.push_str(&other.to_string()),
                },
            }
        }
        Ok(rendered)
    }
}

/// The 1-based line and column (in characters) of byte `at` of `text`.
fn position(text: &str, at: usize) -> (u32, u32) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// The byte of `text` at 1-based `line` and `column` (in characters); its end if there
/// is none.
fn offset(text: &str, line: u32, column: u32) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match text[start..].find('\n') {
            Some(newline) => start += newline + 1,
            None => return text.len(),
        }
    }
    text[start..]
        .char_indices()
        .nth(column.saturating_sub(1) as usize)
        .map_or(text.len(), |(byte, _)| start + byte)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};
    use synapse_shared::domain::AssetState;
    use uuid::Uuid;

    #[test]
    fn the_tags_a_template_may_have_rendered_a_tag_for_are_offered() {
        let candidates = |source: &str, rendered: &str| {
            Template::compile(source, "tag")
                .unwrap()
                .source_candidates(rendered)
        };
        assert_eq!(candidates("VFD-{asset.tag}", "VFD-M-101"), ["M-101"]);
        assert_eq!(candidates("{asset.tag}-VFD", "M-101-VFD"), ["M-101"]);
        assert_eq!(candidates("W-{asset.tag}-PWR", "W-M-1-PWR"), ["M-1"]);
        assert_eq!(
            candidates("{asset.tag.replace('M-', 'VFD-')}", "VFD-101A"),
            ["M-101A"]
        );
        assert_eq!(
            candidates("{asset.area}-{asset.tag}", "U100-M-101"),
            ["M-101", "101"]
        );
        // Not made by the template, or made from no other asset's tag.
        assert!(candidates("VFD-{asset.tag}", "XYZ").is_empty());
        assert!(candidates("{asset.tag}", "M-101").is_empty());
        assert!(candidates("JB-{asset.area}", "JB-U100").is_empty());
        assert!(candidates("{asset.area}{asset.tag}", "U100M-1").is_empty());
        assert!(candidates("{asset.tag.replace('M-', '')}", "101").is_empty());
    }

    #[test]
    fn a_template_of_the_asset_s_own_tag_between_fixed_texts_is_told_apart() {
        let own = |source: &str| Template::compile(source, "tag").unwrap().is_own_tag();
        for source in [
            "{asset.tag}",
            "W-{asset.tag}-PWR",
            "VFD-{asset.tag}",
            "{ asset.tag }-M",
        ] {
            assert!(own(source), "{source}");
        }
        for source in [
            "JB-{asset.area}",
            "W-{asset.tag}-{asset.area}",
            "{asset.tag.substring(0, 3)}",
            "JB-1",
        ] {
            assert!(!own(source), "{source}");
        }
    }

    fn motor() -> AssetState {
        let mut properties = Map::new();
        properties.insert("mcc".into(), json!("MCC-U100-01"));
        properties.insert("rated_power_kw".into(), json!(75));
        AssetState {
            id: Uuid::nil(),
            tag: "M-101A".into(),
            asset_type: "ELECTRIC_MOTOR".into(),
            discipline: "ELECTRICAL".into(),
            name: None,
            area: Some("U100".into()),
            properties,
            version: 1,
        }
    }

    #[test]
    fn a_template_renders_text_and_expressions() {
        let template = Template::compile("W-{asset.tag}-PWR", "then[0].tag").unwrap();
        assert_eq!(
            template.render(&AssetContext::new(&motor())).unwrap(),
            "W-M101A".replace("M101A", "M-101A-PWR")
        );
        let template = Template::compile("{asset.properties.mcc}", "to").unwrap();
        assert_eq!(
            template.render(&AssetContext::new(&motor())).unwrap(),
            "MCC-U100-01"
        );
        let template =
            Template::compile("{{literal}} {asset.properties.rated_power_kw} kW", "name").unwrap();
        assert_eq!(
            template.render(&AssetContext::new(&motor())).unwrap(),
            "{literal} 75 kW"
        );
    }

    #[test]
    fn a_bad_expression_inside_a_template_reports_its_column_in_the_template() {
        let error = Template::compile("W-{asset.colour}", "then[1].tag").unwrap_err();
        assert_eq!(error.field, "then[1].tag");
        assert!(error.message.contains("colour"));
        assert!(error.column.unwrap_or(0) >= 3, "{error:?}");
    }

    #[test]
    fn errors_are_placed_by_line_and_character_in_the_whole_template() {
        for (source, place) in [
            ("Check:\n{asset.nope}", (2, 8)),
            ("ab {asset.tag +\n asset.nope}", (2, 8)),
            ("ÜÜÜ-{asset.nope}", (1, 12)),
            ("ÜÜÜ-{asset.tag", (1, 5)),
            ("a\nÜ}", (2, 2)),
        ] {
            let error = Template::compile(source, "then[0].message").unwrap_err();
            assert_eq!(
                (error.line, error.column),
                (Some(place.0), Some(place.1)),
                "{source:?}: {error:?}"
            );
        }
    }

    #[test]
    fn unbalanced_braces_are_refused() {
        assert!(Template::compile("W-{asset.tag", "tag").is_err());
        assert!(Template::compile("W-}", "tag").is_err());
    }
}
