//! JSON pointers (RFC 6901) read straight off a message's text: each level of the path is
//! scanned once with serde_json, its other members skipped, and the answer is the value's own
//! text. Nothing is built, so reading one value of a large message costs a scan, not a tree.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The text of the value at `pointer` in the JSON text `json`; `""` is the whole of it.
pub(super) fn get<'a>(json: &'a str, pointer: &str) -> Option<&'a str> {
    if pointer.is_empty() {
        return Some(json.trim());
    }
    let mut value = json;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = if token.contains('~') {
            Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
        } else {
            Cow::Borrowed(token)
        };
        let mut parser = serde_json::Deserializer::from_str(value);
        value = parser.deserialize_any(Member(&token)).ok()??.get();
    }
    Some(value)
}

/// An object's key, borrowed from the text unless it has escapes.
pub(super) struct Key<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(key: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        key.deserialize_str(Text)
    }
}

/// One step of a pointer: an object's member by name, or an array's element by index. The
/// last of duplicate members wins, as when the message is parsed whole.
struct Member<'t>(&'t str);

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Key>()? {
            if key.0 == self.0 {
                found = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // An index is digits without a leading zero (RFC 6901); `-` names no element.
        let index = match self.0.parse::<usize>() {
            Ok(index)
                if !(self.0.starts_with('0') && self.0.len() > 1 || self.0.starts_with('+')) =>
            {
                Some(index)
            }
            _ => None,
        };
        let mut found = None;
        let mut at = 0;
        while let Some(element) = seq.next_element_seed(Element(index == Some(at)))? {
            found = found.or(element);
            at += 1;
        }
        Ok(found)
    }

    // A scalar has no members.
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An array element: kept (as text) when it is the one wanted, else skipped.
struct Element(bool);

impl<'de> DeserializeSeed<'de> for Element {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, element: D) -> Result<Self::Value, D::Error> {
        if self.0 {
            <&RawValue>::deserialize(element).map(Some)
        } else {
            IgnoredAny::deserialize(element).map(|_| None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::get;

    #[test]
    fn pointers_name_members_and_elements_as_the_text_spells_them() {
        let json =
            r#"{ "a": {"b c": [10, {"d/e": "x", "t~n": true}, 3]}, "z": null, "a\u0062": 1 }"#;
        assert_eq!(get(json, ""), Some(json));
        assert_eq!(get(json, "/a/b c/0"), Some("10"));
        assert_eq!(get(json, "/a/b c/1/d~1e"), Some(r#""x""#));
        assert_eq!(get(json, "/a/b c/1/t~0n"), Some("true"));
        assert_eq!(get(json, "/a/b c/1"), Some(r#"{"d/e": "x", "t~n": true}"#));
        assert_eq!(get(json, "/z"), Some("null"));
        assert_eq!(
            get(json, "/ab"),
            Some("1"),
            "an escaped key matches its meaning"
        );
        for missing in [
            "/a/b c/3",
            "/a/b c/-",
            "/a/b c/01",
            "/a/b c/0/x",
            "/nope",
            "a",
            "/z/0",
        ] {
            assert_eq!(get(json, missing), None, "{missing}");
        }
    }

    #[test]
    fn the_last_of_duplicate_members_wins() {
        assert_eq!(get(r#"{"k": 1, "k": 2}"#, "/k"), Some("2"));
    }
}
