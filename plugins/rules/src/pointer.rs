//! JSON pointers (RFC 6901) and the `set` edits of a `modify` rule.

use std::fmt;

use serde_json::Value;

/// A parsed JSON pointer, keeping its text for messages.
#[derive(Debug)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl Pointer {
    pub fn parse(text: &str) -> Result<Self, String> {
        let tokens = match text.strip_prefix('/') {
            Some(rest) => rest.split('/').map(unescape).collect::<Option<_>>(),
            None if text.is_empty() => Some(Vec::new()),
            None => {
                return Err(format!(
                    "JSON pointer {text:?} must be empty or start with '/'"
                ));
            }
        };
        let tokens = tokens
            .ok_or_else(|| format!("JSON pointer {text:?} has a '~' not followed by 0 or 1"))?;
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    /// Puts `value` at this pointer in `document`: replaces an existing member or element,
    /// adds a missing last member to an object, and appends to an array for a last `-`.
    /// Everything before the last token must exist.
    pub fn set(&self, document: &mut Value, value: Value) -> Result<(), String> {
        let Some((last, parents)) = self.tokens.split_last() else {
            *document = value;
            return Ok(());
        };
        let mut target = document;
        for token in parents {
            target = child(target, token).ok_or_else(|| format!("{self}: no such parent"))?;
        }
        match target {
            Value::Object(members) => {
                members.insert(last.clone(), value);
            }
            Value::Array(items) if last == "-" => items.push(value),
            Value::Array(items) => {
                let item = array_index(last)
                    .and_then(|index| items.get_mut(index))
                    .ok_or_else(|| format!("{self}: no such array element"))?;
                *item = value;
            }
            _ => return Err(format!("{self}: parent is neither an object nor an array")),
        }
        Ok(())
    }
}

/// Decodes `~1` to `/` and `~0` to `~`; `None` for any other `~`.
fn unescape(token: &str) -> Option<String> {
    let mut decoded = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        decoded.push(match c {
            '~' => match chars.next()? {
                '0' => '~',
                '1' => '/',
                _ => return None,
            },
            c => c,
        });
    }
    Some(decoded)
}

fn child<'a>(value: &'a mut Value, token: &str) -> Option<&'a mut Value> {
    match value {
        Value::Object(members) => members.get_mut(token),
        Value::Array(items) => items.get_mut(array_index(token)?),
        _ => None,
    }
}

/// An array index as RFC 6901 spells it: decimal digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let canonical = token == "0" || !token.starts_with('0');
    if canonical && token.bytes().all(|b| b.is_ascii_digit()) {
        token.parse().ok()
    } else {
        None
    }
}

/// The `set` table of a `modify` rule, applied in the order written.
#[derive(Debug)]
pub struct Edits(Vec<(Pointer, Value)>);

impl Edits {
    pub fn parse(set: serde_json::Map<String, Value>) -> Result<Self, String> {
        if set.is_empty() {
            return Err("\"set\" is empty".to_owned());
        }
        set.into_iter()
            .map(|(pointer, value)| Ok((Pointer::parse(&pointer)?, value)))
            .collect::<Result<_, String>>()
            .map(Self)
    }

    /// The message with every edit applied, or the first edit that cannot be.
    pub fn apply(&self, json: &str) -> Result<String, String> {
        let mut message: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        for (pointer, value) in &self.0 {
            pointer.set(&mut message, value.clone())?;
        }
        Ok(message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(document: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
        Pointer::parse(pointer).unwrap().set(document, value)
    }

    #[test]
    fn parses_rfc_6901_syntax() {
        assert_eq!(
            Pointer::parse("/a~1b/m~0n/").unwrap().tokens,
            ["a/b", "m~n", ""]
        );
        assert!(Pointer::parse("").unwrap().tokens.is_empty());
        assert!(
            Pointer::parse("params")
                .unwrap_err()
                .contains("start with '/'")
        );
        assert!(Pointer::parse("/a~2").unwrap_err().contains("'~'"));
        assert!(Pointer::parse("/a~").is_err());
    }

    #[test]
    fn sets_members_and_elements() {
        let mut doc = json!({"params": {"arguments": {"message": "hi"}, "list": [1, 2]}});
        set(&mut doc, "/params/arguments/message", json!("bye")).unwrap();
        set(&mut doc, "/params/arguments/extra", json!(true)).unwrap();
        set(&mut doc, "/params/list/1", json!(20)).unwrap();
        set(&mut doc, "/params/list/-", json!(3)).unwrap();
        assert_eq!(
            doc,
            json!({"params": {"arguments": {"message": "bye", "extra": true}, "list": [1, 20, 3]}})
        );
        set(&mut doc, "", json!(null)).unwrap();
        assert_eq!(doc, Value::Null);
    }

    #[test]
    fn refuses_missing_parents_and_bad_indices() {
        let mut doc = json!({"a": [0], "s": "x"});
        assert!(
            set(&mut doc, "/b/c", json!(1))
                .unwrap_err()
                .contains("no such parent")
        );
        assert!(set(&mut doc, "/a/5", json!(1)).is_err());
        assert!(set(&mut doc, "/a/01", json!(1)).is_err());
        assert!(set(&mut doc, "/s/x", json!(1)).is_err());
        assert_eq!(doc, json!({"a": [0], "s": "x"}));
    }

    #[test]
    fn applies_edits_in_order() {
        let set = json!({"/result": {}, "/result/text": "mocked"});
        let Value::Object(set) = set else {
            unreachable!()
        };
        let edits = Edits::parse(set).unwrap();
        let edited = edits.apply(r#"{"jsonrpc":"2.0","id":7,"result":{"text":"real"}}"#);
        assert_eq!(
            edited.unwrap(),
            r#"{"jsonrpc":"2.0","id":7,"result":{"text":"mocked"}}"#
        );
        assert!(Edits::parse(serde_json::Map::new()).is_err());
    }
}
