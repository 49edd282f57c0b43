//! [`Interest`]: the messages an interceptor wants, as data the chain evaluates natively so that
//! a message nobody wants costs a few comparisons and no allocation. An interest is a list of
//! [`Filter`]s; a message is wanted when any filter matches it.

use wildmatch::WildMatch;

use crate::protocol::{Direction, MessageKind};

/// One kind of message: method globs, directions and kinds, each empty meaning any.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Method globs; empty matches every message, including answers of unknown method.
    methods: Vec<WildMatch>,
    directions: u8,
    kinds: u8,
}

impl Filter {
    /// Method globs (`*`, `?`), directions and kinds; an empty list means any.
    pub fn new<S: AsRef<str>>(
        methods: impl IntoIterator<Item = S>,
        directions: &[Direction],
        kinds: &[MessageKind],
    ) -> Self {
        let any_if_empty = |bits: u8| if bits == 0 { u8::MAX } else { bits };
        Self {
            methods: methods
                .into_iter()
                .map(|m| WildMatch::new(m.as_ref()))
                .collect(),
            directions: any_if_empty(directions.iter().fold(0, |acc, d| acc | direction_bit(*d))),
            kinds: any_if_empty(kinds.iter().fold(0, |acc, k| acc | kind_bit(*k))),
        }
    }

    #[inline]
    pub fn matches(&self, direction: Direction, kind: MessageKind, method: Option<&str>) -> bool {
        self.matches_any(direction, kind_bit(kind), method)
    }

    /// Whether the filter wants a message of any of the kinds in the mask `kinds`.
    #[inline]
    fn matches_any(&self, direction: Direction, kinds: u8, method: Option<&str>) -> bool {
        self.directions & direction_bit(direction) != 0
            && self.kinds & kinds != 0
            && (self.methods.is_empty()
                || method.is_some_and(|m| self.methods.iter().any(|p| p.matches(m))))
    }
}

/// As an operator reads it: `tools/call, tools/list · client_to_server · request` (`any` for
/// an empty list).
impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let methods: Vec<String> = self.methods.iter().map(ToString::to_string).collect();
        let named = |bits: u8, names: &[(u8, &str)]| {
            if bits == u8::MAX {
                return "any".to_owned();
            }
            let named: Vec<&str> = names
                .iter()
                .filter(|(bit, _)| bits & bit != 0)
                .map(|(_, name)| *name)
                .collect();
            named.join(", ")
        };
        let directions = named(
            self.directions,
            &[(1, "client_to_server"), (2, "server_to_client")],
        );
        let kinds = named(
            self.kinds,
            &[
                (1, "request"),
                (2, "notification"),
                (4, "response"),
                (8, "error"),
            ],
        );
        let methods = if methods.is_empty() {
            "any method".to_owned()
        } else {
            methods.join(", ")
        };
        write!(f, "{methods} · {directions} · {kinds}")
    }
}

#[derive(Debug, Clone, Default)]
pub struct Interest {
    filters: Vec<Filter>,
}

impl Interest {
    /// Every message (batches are split before interest is asked).
    pub fn all() -> Self {
        Self::any_of(vec![Filter::new(Vec::<&str>::new(), &[], &[])])
    }

    /// Nothing: an interceptor with this interest is never called.
    pub fn none() -> Self {
        Self::default()
    }

    /// Messages that match any of `filters`.
    pub fn any_of(filters: Vec<Filter>) -> Self {
        Self { filters }
    }

    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    #[inline]
    pub fn matches(&self, direction: Direction, kind: MessageKind, method: Option<&str>) -> bool {
        self.filters
            .iter()
            .any(|filter| filter.matches(direction, kind, method))
    }

    /// Whether the answers (results or errors) travelling `direction` to requests of `method`
    /// are wanted: one pass over the filters for both kinds.
    #[inline]
    pub fn matches_answers(&self, direction: Direction, method: &str) -> bool {
        let answers = kind_bit(MessageKind::Response) | kind_bit(MessageKind::Error);
        self.filters
            .iter()
            .any(|filter| filter.matches_any(direction, answers, Some(method)))
    }
}

impl From<Filter> for Interest {
    fn from(filter: Filter) -> Self {
        Self::any_of(vec![filter])
    }
}

fn direction_bit(direction: Direction) -> u8 {
    match direction {
        Direction::ClientToServer => 1,
        Direction::ServerToClient => 2,
    }
}

fn kind_bit(kind: MessageKind) -> u8 {
    match kind {
        MessageKind::Request => 1,
        MessageKind::Notification => 2,
        MessageKind::Response => 4,
        MessageKind::Error => 8,
        MessageKind::Batch => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;
    use MessageKind::*;

    #[test]
    fn all_and_none() {
        assert!(Interest::all().matches(ClientToServer, Request, Some("tools/call")));
        assert!(Interest::all().matches(ServerToClient, Response, None));
        assert!(!Interest::none().matches(ClientToServer, Request, Some("x")));
    }

    #[test]
    fn a_filter_narrows_by_glob_direction_and_kind() {
        let filter = Filter::new(["tools/*", "ping"], &[ClientToServer], &[Request]);
        assert!(filter.matches(ClientToServer, Request, Some("tools/call")));
        assert!(filter.matches(ClientToServer, Request, Some("ping")));
        assert!(!filter.matches(ClientToServer, Request, Some("resources/read")));
        assert!(!filter.matches(ServerToClient, Request, Some("tools/call")));
        assert!(!filter.matches(ClientToServer, Notification, Some("tools/call")));
        assert!(!filter.matches(ClientToServer, Request, None));
    }

    #[test]
    fn a_filter_reads_as_declared() {
        let filter = Filter::new(["tools/*"], &[ClientToServer], &[Request, Error]);
        assert_eq!(
            filter.to_string(),
            "tools/* · client_to_server · request, error"
        );
        let any = Filter::new(Vec::<&str>::new(), &[], &[]);
        assert_eq!(any.to_string(), "any method · any · any");
    }

    #[test]
    fn filters_combine_without_crossing() {
        let interest = Interest::any_of(vec![
            Filter::new(["tools/call"], &[ClientToServer], &[Request]),
            Filter::new(["tools/list"], &[ServerToClient], &[Response]),
        ]);
        assert!(interest.matches(ClientToServer, Request, Some("tools/call")));
        assert!(interest.matches(ServerToClient, Response, Some("tools/list")));
        assert!(!interest.matches(ServerToClient, Response, Some("tools/call")));
        assert!(!interest.matches(ClientToServer, Request, Some("tools/list")));
    }
}
