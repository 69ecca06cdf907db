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
    if name.is_ascii() {
        // Fast path (nearly every real name): one pass over the bytes.
        if name.len() > MAX_NAME_CHARS {
            return Some("it is longer than 255 characters");
        }
        let mut previous = b'.';
        for &b in name.as_bytes() {
            if b <= b' ' || b == 0x7f {
                return Some("it contains whitespace or a control character");
            }
            if b == b'.' && previous == b'.' {
                return Some("it has an empty segment");
            }
            previous = b;
        }
        return (previous == b'.').then_some("it has an empty segment");
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

/// A trie node as built: easy to grow.
#[derive(Debug, Clone)]
struct BuildNode {
    star: u32,
    globstar: u32,
    loops: bool,
    endpoints: Vec<u32>,
}

impl BuildNode {
    fn new(loops: bool) -> Self {
        BuildNode {
            star: NONE,
            globstar: NONE,
            loops,
            endpoints: Vec::new(),
        }
    }
}

/// A trie node as matched: fixed size, its literal children and endpoints stored as ranges of
/// two flat arrays, nodes numbered breadth-first so the hot upper levels sit together.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Child reached by a `*` segment.
    star: u32,
    /// Child reached by a `**` segment.
    globstar: u32,
    /// Literal children: `children[first_child..first_child + child_count]`, sorted by segment.
    first_child: u32,
    child_count: u32,
    /// Endpoints with a pattern ending here: `endpoints[first_endpoint..+endpoint_count]`.
    first_endpoint: u32,
    endpoint_count: u32,
    /// This node was reached by `**`, so it may also swallow further segments.
    loops: bool,
}

/// All patterns of a set of endpoints, compiled once; endpoint ids are the positions in the input.
#[derive(Debug, Clone)]
pub struct Matcher {
    nodes: Vec<Node>,
    /// (segment id, child) pairs, each node's run sorted by segment id.
    children: Vec<(u32, u32)>,
    /// The root's literal children indexed by segment id: every event starts there, and the
    /// root is the one node with a child per word, so a direct table beats a search.
    root_children: Vec<u32>,
    endpoints: Vec<u32>,
    /// Literal segments interned to ids, so an event segment is hashed once per step.
    segment_ids: FxHashMap<Box<str>, u32>,
    /// Endpoints with a pattern that is exactly `*` or `**`.
    match_all: Vec<u32>,
    endpoint_count: usize,
}

/// Grows the trie pattern by pattern, then freezes it into a [`Matcher`].
struct Builder {
    nodes: Vec<BuildNode>,
    segment_ids: FxHashMap<Box<str>, u32>,
    edges: FxHashMap<(u32, u32), u32>,
    match_all: Vec<u32>,
}

impl Builder {
    fn insert(&mut self, pattern: &str, id: u32) -> Result<(), GlobError> {
        validate_pattern(pattern)?;
        if pattern == "*" || pattern == "**" {
            self.match_all.push(id);
            return Ok(());
        }
        let mut node = ROOT;
        for segment in pattern.split('.') {
            node = match segment {
                "*" => self.wildcard_child(node, false),
                "**" => self.wildcard_child(node, true),
                literal => {
                    let next_id = self.segment_ids.len() as u32;
                    let seg = *self.segment_ids.entry(literal.into()).or_insert(next_id);
                    let fresh = self.nodes.len() as u32;
                    let child = *self.edges.entry((node, seg)).or_insert(fresh);
                    if child == fresh {
                        self.nodes.push(BuildNode::new(false));
                    }
                    child
                }
            };
        }
        self.nodes[node as usize].endpoints.push(id);
        Ok(())
    }

    fn wildcard_child(&mut self, node: u32, globstar: bool) -> u32 {
        let fresh = self.nodes.len() as u32;
        let parent = &mut self.nodes[node as usize];
        let slot = if globstar {
            &mut parent.globstar
        } else {
            &mut parent.star
        };
        if *slot != NONE {
            return *slot;
        }
        *slot = fresh;
        self.nodes.push(BuildNode::new(globstar));
        fresh
    }

    fn freeze(self, endpoint_count: usize) -> Matcher {
        let mut literal: Vec<Vec<(u32, u32)>> = vec![Vec::new(); self.nodes.len()];
        for (&(parent, seg), &child) in &self.edges {
            literal[parent as usize].push((seg, child));
        }
        // Breadth-first renumbering.
        let mut order = vec![ROOT];
        let mut new_id = vec![NONE; self.nodes.len()];
        new_id[ROOT as usize] = 0;
        let mut i = 0;
        while i < order.len() {
            let old = order[i] as usize;
            literal[old].sort_unstable();
            let node = &self.nodes[old];
            let kids = literal[old].iter().map(|&(_, c)| c);
            for child in kids
                .chain([node.star, node.globstar])
                .filter(|&c| c != NONE)
            {
                new_id[child as usize] = order.len() as u32;
                order.push(child);
            }
            i += 1;
        }
        let renumber = |old: u32| {
            if old == NONE {
                NONE
            } else {
                new_id[old as usize]
            }
        };
        let mut matcher = Matcher {
            nodes: Vec::with_capacity(order.len()),
            children: Vec::with_capacity(self.edges.len()),
            root_children: vec![NONE; self.segment_ids.len()],
            endpoints: Vec::new(),
            segment_ids: self.segment_ids,
            match_all: self.match_all,
            endpoint_count,
        };
        for &old in &order {
            let node = &self.nodes[old as usize];
            let first_child = matcher.children.len() as u32;
            let first_endpoint = matcher.endpoints.len() as u32;
            matcher.children.extend(
                literal[old as usize]
                    .iter()
                    .map(|&(seg, child)| (seg, renumber(child))),
            );
            matcher.endpoints.extend_from_slice(&node.endpoints);
            matcher.nodes.push(Node {
                star: renumber(node.star),
                globstar: renumber(node.globstar),
                first_child,
                child_count: literal[old as usize].len() as u32,
                first_endpoint,
                endpoint_count: node.endpoints.len() as u32,
                loops: node.loops,
            });
        }
        let root = matcher.nodes[ROOT as usize];
        let start = root.first_child as usize;
        for &(seg, child) in &matcher.children[start..start + root.child_count as usize] {
            matcher.root_children[seg as usize] = child;
        }
        matcher.match_all.sort_unstable();
        matcher.match_all.dedup();
        matcher
    }
}

impl Matcher {
    /// Compiles `endpoints[i]` (a list of patterns) as endpoint `i`.
    pub fn new<S: AsRef<str>>(endpoints: &[Vec<S>]) -> Result<Self, GlobError> {
        let mut builder = Builder {
            nodes: vec![BuildNode::new(false)],
            segment_ids: FxHashMap::default(),
            edges: FxHashMap::default(),
            match_all: Vec::new(),
        };
        for (id, patterns) in endpoints.iter().enumerate() {
            let id = u32::try_from(id).expect("more than 4 billion endpoints");
            for pattern in patterns {
                builder.insert(pattern.as_ref(), id)?;
            }
        }
        Ok(builder.freeze(endpoints.len()))
    }

    /// How many endpoints were compiled (including those with no patterns).
    pub fn endpoint_count(&self) -> usize {
        self.endpoint_count
    }

    fn literal_child(&self, id: u32, node: &Node, seg: u32) -> Option<u32> {
        if id == ROOT {
            let child = self.root_children[seg as usize];
            return (child != NONE).then_some(child);
        }
        let start = node.first_child as usize;
        let run = &self.children[start..start + node.child_count as usize];
        run.binary_search_by_key(&seg, |&(s, _)| s)
            .ok()
            .map(|i| run[i].1)
    }

    /// The endpoints whose patterns match `event`, ascending and without repeats.
    pub fn matches(&self, event: &str) -> Result<Vec<u32>, GlobError> {
        let mut out = Vec::new();
        self.matches_into(event, &mut Scratch::default(), &mut out)?;
        Ok(out)
    }

    /// `matches` for many events in one call; fails on the first invalid name.
    pub fn matches_many<S: AsRef<str>>(&self, events: &[S]) -> Result<Vec<Vec<u32>>, GlobError> {
        let (flat, ends) = self.matches_many_flat(events)?;
        let mut start = 0;
        Ok(ends
            .iter()
            .map(|&end| {
                let ids = flat[start..end].to_vec();
                start = end;
                ids
            })
            .collect())
    }

    /// `matches_many` without an allocation per event: all ids in one vector, and for each
    /// event the end of its run in it.
    pub fn matches_many_flat<S: AsRef<str>>(
        &self,
        events: &[S],
    ) -> Result<(Vec<u32>, Vec<usize>), GlobError> {
        let mut scratch = Scratch::default();
        let mut flat = Vec::with_capacity(events.len() * 2);
        let mut ends = Vec::with_capacity(events.len());
        for event in events {
            self.matches_into(event.as_ref(), &mut scratch, &mut flat)?;
            ends.push(flat.len());
        }
        Ok((flat, ends))
    }

    /// Appends the matches of `event` to `out` (ascending, no repeats within this event).
    pub fn matches_into(
        &self,
        event: &str,
        scratch: &mut Scratch,
        out: &mut Vec<u32>,
    ) -> Result<(), GlobError> {
        validate_event(event)?;
        let Scratch { live, next } = scratch;
        live.clear();
        live.push(ROOT);
        for segment in event.split('.') {
            let seg = self.segment_ids.get(segment).copied();
            next.clear();
            for &id in live.iter() {
                let node = &self.nodes[id as usize];
                if let Some(child) = seg.and_then(|seg| self.literal_child(id, node, seg)) {
                    push_unique(next, child);
                }
                if node.star != NONE {
                    push_unique(next, node.star);
                }
                if node.globstar != NONE {
                    push_unique(next, node.globstar);
                }
                if node.loops {
                    push_unique(next, id);
                }
            }
            std::mem::swap(live, next);
            if live.is_empty() {
                break;
            }
        }
        let start = out.len();
        for &id in live.iter() {
            let node = &self.nodes[id as usize];
            let first = node.first_endpoint as usize;
            out.extend_from_slice(&self.endpoints[first..first + node.endpoint_count as usize]);
        }
        out.extend_from_slice(&self.match_all);
        let found = &mut out[start..];
        if found.len() > 1 {
            found.sort_unstable();
            let mut kept = 1;
            for i in 1..found.len() {
                if found[i] != found[kept - 1] {
                    found[kept] = found[i];
                    kept += 1;
                }
            }
            out.truncate(start + kept);
        }
        Ok(())
    }
}

/// Buffers reused from one event to the next.
#[derive(Debug, Default)]
pub struct Scratch {
    live: Vec<u32>,
    next: Vec<u32>,
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
