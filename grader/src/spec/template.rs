//! `{{name}}` templates in exercise strings.
//!
//! A string that is exactly one placeholder (`"{{price}}"`) takes the variable's JSON type, so a
//! generated integer stays an integer in a JSON body; placeholders inside longer strings are
//! replaced by the value's text.

use std::collections::BTreeMap;

use serde_json::Value;

/// Variables visible to a step: generated data plus earlier captures.
pub type Scope = BTreeMap<String, Value>;

/// A piece of a parsed template.
#[derive(Debug, PartialEq)]
enum Part<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits a template into text and variables; errors on an unclosed `{{` or a bad name.
fn parts(s: &str) -> Result<Vec<Part<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Part::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("unclosed `{{{{` in \"{s}\""));
        };
        let name = after[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`{{{{{}}}}}` is not a variable name (letters, digits and _ only)",
                &after[..end]
            ));
        }
        out.push(Part::Var(name));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Part::Text(rest));
    }
    Ok(out)
}

/// Names of the variables a string uses, or a syntax error.
pub fn variables(s: &str) -> Result<Vec<String>, String> {
    Ok(parts(s)?
        .into_iter()
        .filter_map(|p| match p {
            Part::Var(v) => Some(v.to_string()),
            Part::Text(_) => None,
        })
        .collect())
}

/// Every variable used in the strings (keys and values) of a JSON value.
pub fn variables_in_json(v: &Value) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    walk_strings(v, &mut |s| {
        out.extend(variables(s)?);
        Ok(())
    })?;
    Ok(out)
}

fn walk_strings(v: &Value, f: &mut dyn FnMut(&str) -> Result<(), String>) -> Result<(), String> {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().try_for_each(|i| walk_strings(i, f)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            f(k)?;
            walk_strings(v, f)
        }),
        _ => Ok(()),
    }
}

/// The text form of a value inside a longer string: strings without quotes, others as JSON.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders a template to text. Unknown variables are an error naming the variable.
pub fn render(s: &str, scope: &Scope) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    for part in parts(s)? {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Var(name) => out.push_str(&text_of(lookup(name, scope)?)),
        }
    }
    Ok(out)
}

/// Renders a template to a JSON value, keeping the variable's type when the whole string is one
/// placeholder.
pub fn render_value(s: &str, scope: &Scope) -> Result<Value, String> {
    let p = parts(s)?;
    if let [Part::Var(name)] = p.as_slice() {
        return Ok(lookup(name, scope)?.clone());
    }
    render(s, scope).map(Value::String)
}

/// Renders every string of a JSON value (object keys as text, values typed).
pub fn render_json(v: &Value, scope: &Scope) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => render_value(s, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_json(i, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(render(k, scope)?, render_json(v, scope)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn lookup<'a>(name: &str, scope: &'a Scope) -> Result<&'a Value, String> {
    scope
        .get(name)
        .ok_or_else(|| format!("variable `{name}` is not defined"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let mut s = Scope::new();
        s.insert("sku".into(), json!("SKU-1A2B3C"));
        s.insert("price".into(), json!(1250));
        s
    }

    #[test]
    fn whole_placeholder_keeps_its_type() {
        assert_eq!(render_value("{{price}}", &scope()).unwrap(), json!(1250));
        assert_eq!(render_value("{{ price }}", &scope()).unwrap(), json!(1250));
        assert_eq!(
            render_value("cost {{price}}", &scope()).unwrap(),
            json!("cost 1250")
        );
    }

    #[test]
    fn json_bodies_render_recursively() {
        let body = json!({"sku": "{{sku}}", "price_cents": "{{price}}", "tags": ["{{sku}}-x"]});
        assert_eq!(
            render_json(&body, &scope()).unwrap(),
            json!({"sku": "SKU-1A2B3C", "price_cents": 1250, "tags": ["SKU-1A2B3C-x"]})
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            render("/p/{{id}}", &scope()).unwrap_err(),
            "variable `id` is not defined"
        );
        assert!(variables("/p/{{id").unwrap_err().contains("unclosed"));
        assert!(variables("{{a-b}}")
            .unwrap_err()
            .contains("not a variable name"));
        assert_eq!(variables("{{a}}/{{b}}").unwrap(), vec!["a", "b"]);
    }
}
