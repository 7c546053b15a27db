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

impl Template {
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
                            message: format!("unclosed `{{` at byte {index} of the template"),
                            line: Some(1),
                            column: Some(index as u32 + 1),
                        })?;
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    let expression =
                        Expression::compile(&source[start..end], field).map_err(|mut error| {
                            // Report columns relative to the whole template.
                            error.column = error.column.map(|column| column + start as u32);
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
                        message: format!(
                            "unmatched `}}` at byte {index}; write `}}}}` for a literal brace"
                        ),
                        line: Some(1),
                        column: Some(index as u32 + 1),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};
    use synapse_shared::domain::AssetState;
    use uuid::Uuid;

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
    fn unbalanced_braces_are_refused() {
        assert!(Template::compile("W-{asset.tag", "tag").is_err());
        assert!(Template::compile("W-}", "tag").is_err());
    }
}
