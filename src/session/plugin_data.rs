//! [`PluginData`]: what one plugin keeps in one session (the `session-kv` capability), as the
//! memory store holds it; the durable stores keep the same entries under the same rules
//! ([`PluginData::fits`], [`PluginData::incremented`]). Its size is bounded so a plugin cannot
//! grow a session without limit, and it ends with the session.

use std::collections::HashMap;

/// Bytes of keys and values one plugin may keep in one session.
pub const PLUGIN_DATA_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginDataError {
    #[error("the plugin's state in this session would exceed {PLUGIN_DATA_LIMIT} bytes")]
    Full,
    #[error("the value under '{0}' is not an integer")]
    NotInteger(String),
    #[error("the integer under '{0}' would overflow")]
    Overflow(String),
}

#[derive(Debug, Clone, Default)]
pub struct PluginData {
    entries: HashMap<String, String>,
    /// Bytes of all keys and values.
    size: usize,
}

impl PluginData {
    /// Bytes of all keys and values.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether entries of `size` bytes in all stay within the limit when the value under a key
    /// of `key_len` bytes (now `current`) becomes `value`; returns the new size.
    pub fn fits(
        size: usize,
        current: Option<&str>,
        key_len: usize,
        value: &str,
    ) -> Result<usize, PluginDataError> {
        let old = current.map_or(0, |old| key_len + old.len());
        let size = size.saturating_sub(old) + key_len + value.len();
        if size > PLUGIN_DATA_LIMIT {
            return Err(PluginDataError::Full);
        }
        Ok(size)
    }

    /// The integer under `key` (now `current`; absent counts as 0) plus `delta`.
    pub fn incremented(
        key: &str,
        current: Option<&str>,
        delta: i64,
    ) -> Result<i64, PluginDataError> {
        let current = match current {
            None => 0,
            Some(text) => text
                .parse::<i64>()
                .map_err(|_| PluginDataError::NotInteger(key.to_owned()))?,
        };
        current
            .checked_add(delta)
            .ok_or_else(|| PluginDataError::Overflow(key.to_owned()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    pub fn set(&mut self, key: &str, value: String) -> Result<(), PluginDataError> {
        self.size = Self::fits(self.size, self.get(key), key.len(), &value)?;
        self.entries.insert(key.to_owned(), value);
        Ok(())
    }

    pub fn delete(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.size -= key.len() + old.len();
        }
    }

    /// Adds `delta` to the integer under `key` (absent counts as 0); returns the new value.
    pub fn increment(&mut self, key: &str, delta: i64) -> Result<i64, PluginDataError> {
        let next = Self::incremented(key, self.get(key), delta)?;
        self.set(key, next.to_string())?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_bounds_its_size() {
        let mut data = PluginData::default();
        assert_eq!(data.increment("calls", 2), Ok(2));
        assert_eq!(data.increment("calls", -5), Ok(-3));
        data.set("name", "x".repeat(10)).unwrap();
        assert_eq!(data.get("name").map(str::len), Some(10));
        assert_eq!(
            data.increment("name", 1),
            Err(PluginDataError::NotInteger("name".into()))
        );
        assert_eq!(
            data.set("big", "x".repeat(PLUGIN_DATA_LIMIT)),
            Err(PluginDataError::Full)
        );
        data.delete("name");
        data.delete("calls");
        assert_eq!(data.size, 0);
        data.set("big", "x".repeat(PLUGIN_DATA_LIMIT - 3)).unwrap();
        assert_eq!(data.set("i", "1".into()), Err(PluginDataError::Full));
        assert_eq!(
            data.increment("big", 1).unwrap_err().to_string(),
            "the value under 'big' is not an integer"
        );
        assert_eq!(
            PluginData::incremented("n", Some("9223372036854775807"), 1),
            Err(PluginDataError::Overflow("n".into()))
        );
    }
}
