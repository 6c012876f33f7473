//! `broker_topology` parameters: the exchanges and queues that must exist.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::de;

#[derive(Debug, Clone)]
pub struct Params {
    pub exchanges: Vec<String>,
    pub queues: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BrokerTopologyParams")]
pub struct Raw {
    #[serde(default)]
    exchanges: Vec<String>,
    #[serde(default)]
    queues: Vec<String>,
}

pub fn parse(params: toml::Value) -> Result<Params, String> {
    let raw: Raw = de("params of `broker_topology`", params)?;
    if raw.exchanges.is_empty() && raw.queues.is_empty() {
        return Err("`broker_topology` needs `exchanges` or `queues` to look for".into());
    }
    if let Some(bad) = raw
        .exchanges
        .iter()
        .chain(&raw.queues)
        .find(|n| n.is_empty() || n.len() > 255 || n.contains("{{"))
    {
        return Err(format!(
            "`{bad}` is not a name RabbitMQ accepts here (1 to 255 bytes, no templates)"
        ));
    }
    Ok(Params {
        exchanges: raw.exchanges,
        queues: raw.queues,
    })
}

impl Params {
    pub fn template_strings(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> toml::Value {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn names_are_required_and_plain() {
        assert!(parse(value("exchanges = [\"shop.events\"]")).is_ok());
        assert!(parse(value("")).unwrap_err().contains("needs"));
        assert!(parse(value("queues = [\"\"]")).is_err());
        assert!(parse(value("queues = [\"q{{x}}\"]")).is_err());
        assert!(parse(value("queue = [\"q\"]")).is_err());
    }
}
