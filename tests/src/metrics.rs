//! Reading a `/metrics` page (Prometheus text format) back into samples.

use std::collections::BTreeMap;
use std::time::Duration;

/// How long [`scrape_until`] waits for what it expects.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One line of a Prometheus text page: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether the sample carries every one of `labels` (it may carry more).
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(name, value)| self.labels.get(*name).map(String::as_str) == Some(*value))
    }
}

/// Every sample of a page; comments (`# TYPE`, `# HELP`) and blank lines are skipped.
pub fn parse(page: &str) -> anyhow::Result<Vec<Sample>> {
    page.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).map_err(|error| error.context(format!("line `{line}`"))))
        .collect()
}

/// The value of the one sample named `name` with `labels`, if there is exactly one.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut matching = samples
        .iter()
        .filter(|sample| sample.name == name && sample.has(labels));
    let first = matching.next()?;
    matching.next().is_none().then_some(first.value)
}

fn parse_line(line: &str) -> anyhow::Result<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inside) = rest.strip_prefix('{') {
        let mut chars = inside.char_indices();
        let mut label = String::new();
        let mut end = None;
        while let Some((at, character)) = chars.next() {
            match character {
                '}' => {
                    end = Some(at + 1);
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    anyhow::ensure!(
                        matches!(chars.next(), Some((_, '"'))),
                        "label value not quoted"
                    );
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, escaped)) => value.push(escaped),
                                None => anyhow::bail!("unterminated escape"),
                            },
                            Some((_, '"')) => break,
                            Some((_, other)) => value.push(other),
                            None => anyhow::bail!("unterminated label value"),
                        }
                    }
                    labels.insert(std::mem::take(&mut label), value);
                }
                other => label.push(other),
            }
        }
        let end = end.ok_or_else(|| anyhow::anyhow!("labels not closed"))?;
        rest = &inside[end..];
    }
    let value_text = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no value"))?;
    let value = value_text.parse::<f64>()?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Scrape `url` until `ready` holds for its samples (the gauges are sampled on timers),
/// for at most [`PATIENCE`]; the page and its samples.
pub async fn scrape_until(
    http: &reqwest::Client,
    url: &str,
    ready: impl Fn(&[Sample]) -> bool,
) -> anyhow::Result<(String, Vec<Sample>)> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let reply = http.get(url).send().await?;
        anyhow::ensure!(reply.status() == 200, "{url}: {}", reply.status());
        let content_type = reply
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        anyhow::ensure!(
            content_type.starts_with("text/plain"),
            "{url}: {content_type}"
        );
        let page = reply.text().await?;
        let samples = parse(&page)?;
        if ready(&samples) {
            return Ok((page, samples));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{url} never showed what was expected:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_labels_parse() {
        let page = "# TYPE x counter\n\
                    x 3\n\
                    h_bucket{route=\"/assets/{id}\",le=\"+Inf\"} 2\n\
                    q{a=\"say \\\"hi\\\", ok\"} 1.5\n";
        let samples = parse(page).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(value(&samples, "x", &[]), Some(3.0));
        assert_eq!(
            value(
                &samples,
                "h_bucket",
                &[("route", "/assets/{id}"), ("le", "+Inf")]
            ),
            Some(2.0)
        );
        assert_eq!(value(&samples, "q", &[("a", "say \"hi\", ok")]), Some(1.5));
    }
}
