//! Event-glob matcher: every pattern of every endpoint compiled into one segment trie.
//!
//! Rules (DESIGN.md "Event globs"): `.` separates segments and matching is case-sensitive. A segment
//! that is exactly `*` matches one non-empty segment, one that is exactly `**` matches one or more
//! whole segments, and a pattern that is exactly `*` or `**` matches every event. Any other segment,
//! including one with a `*` inside (`sign*`, `***`), is literal. Names and patterns with empty
//! segments, whitespace or control characters, or over 255 characters are rejected.
//!
//! Matching walks the trie as a small NFA, one step per event segment, so it costs
//! O(segments × live states) — independent of how many patterns were compiled.

use rustc_hash::FxHashMap;
use std::fmt;

/// Longest event name or pattern accepted, in characters.
pub const MAX_NAME_CHARS: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobError {
    InvalidPattern {
        pattern: String,
        reason: &'static str,
    },
    InvalidEventName {
        event: String,
        reason: &'static str,
    },
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlobError::InvalidPattern { pattern, reason } => {
                write!(f, "invalid event pattern {pattern:?}: {reason}")
            }
            GlobError::InvalidEventName { event, reason } => {
                write!(f, "invalid event name {event:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for GlobError {}

/// Why `name` is not a valid event name or pattern, if it is not.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Some("it is longer than 255 characters");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains whitespace or a control character");
    }
    if name.split('.').any(str::is_empty) {
        return Some("it has an empty segment");
    }
    None
}

/// Checks an event name against the naming rules.
pub fn validate_event(event: &str) -> Result<(), GlobError> {
    match name_problem(event) {
        None => Ok(()),
        Some(reason) => Err(GlobError::InvalidEventName {
            event: event.to_owned(),
            reason,
        }),
    }
}

/// Checks a pattern against the naming rules.
pub fn validate_pattern(pattern: &str) -> Result<(), GlobError> {
    match name_problem(pattern) {
        None => Ok(()),
        Some(reason) => Err(GlobError::InvalidPattern {
            pattern: pattern.to_owned(),
            reason,
        }),
    }
}

const NONE: u32 = u32::MAX;
const ROOT: u32 = 0;

#[derive(Debug, Clone)]
struct Node {
    /// Child reached by a `*` segment.
    star: u32,
    /// Child reached by a `**` segment.
    globstar: u32,
    /// This node was reached by `**`, so it may also swallow further segments.
    loops: bool,
    /// Endpoints with a pattern ending here.
    endpoints: Vec<u32>,
}

impl Node {
    fn new(loops: bool) -> Self {
        Node {
            star: NONE,
            globstar: NONE,
            loops,
            endpoints: Vec::new(),
        }
    }
}

/// All patterns of a set of endpoints, compiled once; endpoint ids are the positions in the input.
#[derive(Debug, Clone)]
pub struct Matcher {
    nodes: Vec<Node>,
    /// Literal segments interned to ids, so an event segment is hashed once per step.
    segment_ids: FxHashMap<Box<str>, u32>,
    /// Literal edges: (node, segment id) → child.
    edges: FxHashMap<(u32, u32), u32>,
    /// Endpoints with a pattern that is exactly `*` or `**`.
    match_all: Vec<u32>,
    endpoint_count: usize,
}

impl Matcher {
    /// Compiles `endpoints[i]` (a list of patterns) as endpoint `i`.
    pub fn new<S: AsRef<str>>(endpoints: &[Vec<S>]) -> Result<Self, GlobError> {
        let mut matcher = Matcher {
            nodes: vec![Node::new(false)],
            segment_ids: FxHashMap::default(),
            edges: FxHashMap::default(),
            match_all: Vec::new(),
            endpoint_count: endpoints.len(),
        };
        for (id, patterns) in endpoints.iter().enumerate() {
            let id = u32::try_from(id).expect("more than 4 billion endpoints");
            for pattern in patterns {
                matcher.insert(pattern.as_ref(), id)?;
            }
        }
        matcher.match_all.sort_unstable();
        matcher.match_all.dedup();
        Ok(matcher)
    }

    /// How many endpoints were compiled (including those with no patterns).
    pub fn endpoint_count(&self) -> usize {
        self.endpoint_count
    }

    fn insert(&mut self, pattern: &str, id: u32) -> Result<(), GlobError> {
        validate_pattern(pattern)?;
        if pattern == "*" || pattern == "**" {
            self.match_all.push(id);
            return Ok(());
        }
        let mut node = ROOT;
        for segment in pattern.split('.') {
            node = match segment {
                "*" => self.child_or_insert(node, |n| &mut n.star, false),
                "**" => self.child_or_insert(node, |n| &mut n.globstar, true),
                literal => {
                    let next_id = self.segment_ids.len() as u32;
                    let seg = *self.segment_ids.entry(literal.into()).or_insert(next_id);
                    let fresh = self.nodes.len() as u32;
                    let child = *self.edges.entry((node, seg)).or_insert(fresh);
                    if child == fresh {
                        self.nodes.push(Node::new(false));
                    }
                    child
                }
            };
        }
        self.nodes[node as usize].endpoints.push(id);
        Ok(())
    }

    fn child_or_insert(&mut self, node: u32, slot: fn(&mut Node) -> &mut u32, loops: bool) -> u32 {
        let existing = *slot(&mut self.nodes[node as usize]);
        if existing != NONE {
            return existing;
        }
        let child = self.nodes.len() as u32;
        self.nodes.push(Node::new(loops));
        *slot(&mut self.nodes[node as usize]) = child;
        child
    }

    /// The endpoints whose patterns match `event`, ascending and without repeats.
    pub fn matches(&self, event: &str) -> Result<Vec<u32>, GlobError> {
        validate_event(event)?;
        let mut out = Vec::new();
        self.collect(event, &mut out);
        Ok(out)
    }

    /// `matches` for many events in one call; fails on the first invalid name.
    pub fn matches_many<S: AsRef<str>>(&self, events: &[S]) -> Result<Vec<Vec<u32>>, GlobError> {
        events.iter().map(|e| self.matches(e.as_ref())).collect()
    }

    /// Appends the matches of an already validated event to `out`, then sorts and dedups `out`.
    fn collect(&self, event: &str, out: &mut Vec<u32>) {
        let mut live: Vec<u32> = vec![ROOT];
        let mut next: Vec<u32> = Vec::new();
        for segment in event.split('.') {
            let seg = self.segment_ids.get(segment).copied();
            next.clear();
            for &id in &live {
                let node = &self.nodes[id as usize];
                if let Some(seg) = seg {
                    if let Some(&child) = self.edges.get(&(id, seg)) {
                        push_unique(&mut next, child);
                    }
                }
                if node.star != NONE {
                    push_unique(&mut next, node.star);
                }
                if node.globstar != NONE {
                    push_unique(&mut next, node.globstar);
                }
                if node.loops {
                    push_unique(&mut next, id);
                }
            }
            std::mem::swap(&mut live, &mut next);
            if live.is_empty() {
                break;
            }
        }
        for &id in &live {
            out.extend_from_slice(&self.nodes[id as usize].endpoints);
        }
        out.extend_from_slice(&self.match_all);
        out.sort_unstable();
        out.dedup();
    }
}

/// Live-state sets stay small (one per distinct trie path alive), so a linear scan beats hashing.
fn push_unique(set: &mut Vec<u32>, id: u32) {
    if !set.contains(&id) {
        set.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, event: &str) -> bool {
        let m = Matcher::new(&[vec![pattern]]).unwrap();
        m.matches(event).unwrap() == vec![0]
    }

    #[test]
    fn original_table_where_design_agrees() {
        let rows: &[(&str, &str, bool)] = &[
            ("user.created", "user.created", true),
            ("user.created", "user.updated", false),
            ("user.*", "user.created", true),
            ("user.*", "user.profile.updated", false),
            ("user.*", "user", false),
            ("user.**", "user", false),
            ("user.**", "user.created", true),
            ("user.**", "user.activity.login.failed", true),
            ("user.**", "org.user.created", false),
            ("user.**.created", "user.created", false),
            ("user.**.created", "user.a.b.created", true),
            ("*.user.created", "org.user.created", true),
            ("*.created", "created", false),
            ("**.created", "created", false),
            ("**.created", "a.b.created", true),
            ("user.*.created", "user.profile.123.created", false),
            ("a.*.*", "a.b", false),
            ("*.*", "a", false),
            ("user.sign*", "user.signup", false),
            ("user.sign*", "user.sign*", true),
            ("user.*up", "user.signup", false),
            ("user.***", "user.x", false),
            ("user.***", "user.***", true),
            ("*", "a.b.c", true),
            ("*", "ping", true),
            ("**", "anything", true),
            ("**", "user.created", true),
            ("User.Created", "user.created", false),
            ("user.#", "user.x", false),
            ("user.+", "user.x", false),
            ("user.?", "user.x", false),
            ("user.[ab]", "user.a", false),
            ("user.(x|y)", "user.x", false),
            ("order.**", "order.payment.completed", true),
            ("user.*.activated", "user.onboarding.activated", true),
        ];
        for &(pattern, event, expected) in rows {
            assert_eq!(matches(pattern, event), expected, "{pattern} vs {event}");
        }
    }

    #[test]
    fn globstar_in_the_middle_backtracks() {
        assert!(matches("a.**.b.c", "a.b.b.c"));
        assert!(matches("a.**.b.**", "a.x.b.y.z"));
        assert!(!matches("a.**.b.**", "a.x.b"));
        assert!(matches("**.**", "a.b"));
        assert!(!matches("**.**", "a"));
    }

    #[test]
    fn rejects_what_design_rejects() {
        for bad in [
            "",
            "user..created",
            ".user",
            "user.",
            "user created",
            "a\nb",
            "a\u{7}",
        ] {
            assert!(Matcher::new(&[vec![bad]]).is_err(), "pattern {bad:?}");
            let m = Matcher::new(&[vec!["**"]]).unwrap();
            assert!(m.matches(bad).is_err(), "event {bad:?}");
        }
        let long = "a".repeat(256);
        assert!(validate_event(&long).is_err());
        assert!(validate_event(&"é".repeat(255)).is_ok());
    }

    #[test]
    fn many_endpoints_sorted_and_deduplicated() {
        let m = Matcher::new(&[
            vec!["order.**", "order.*"],
            vec!["user.signup"],
            vec![],
            vec!["*"],
            vec!["order.created", "**.created"],
        ])
        .unwrap();
        assert_eq!(m.matches("order.created").unwrap(), vec![0, 3, 4]);
        assert_eq!(m.matches("user.signup").unwrap(), vec![1, 3]);
        assert_eq!(m.matches("nothing").unwrap(), vec![3]);
        assert_eq!(m.endpoint_count(), 5);
        assert_eq!(
            m.matches_many(&["order.created", "user.signup"]).unwrap(),
            vec![vec![0, 3, 4], vec![1, 3]]
        );
    }

    #[test]
    fn error_names_the_bad_input() {
        let err = Matcher::new(&[vec!["ok", "bad..one"]]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid event pattern \"bad..one\": it has an empty segment"
        );
    }
}
