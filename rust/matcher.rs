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

// A frozen node is one record in a flat `u32` arena, and its id is the record's offset, so a
// node, its endpoints and (usually) its literal children share a cache line or two:
//   [star, globstar, flags, endpoint count, table, endpoints.., child segments.., children..]
// `flags` is the literal child count << 1 | LOOPS. A node with many children (see `is_dense`)
// keeps them in a direct table indexed by segment id instead, and `table` is its offset in
// `Matcher::tables`; otherwise `table` is NONE and the segments are sorted for a binary search.
const STAR: usize = 0;
const GLOBSTAR: usize = 1;
const FLAGS: usize = 2;
const ENDPOINT_COUNT: usize = 3;
const TABLE: usize = 4;
const HEADER: usize = 5;
/// The node was reached by `**`, so it may also swallow further segments.
const LOOPS: u32 = 1;

/// A direct table costs `segment_count` slots, so only nodes with at least an eighth of all
/// segments as children get one: the tables then take at most 8 slots per trie edge.
fn is_dense(child_count: usize, segment_count: usize) -> bool {
    child_count > 0 && child_count * 8 >= segment_count
}

/// Events matched in lockstep by `matches_many_flat`: while one lane's next nodes load from
/// memory, the other lanes run, so large tries cost memory bandwidth instead of latency.
const LANES: usize = 16;

/// All patterns of a set of endpoints, compiled once; endpoint ids are the positions in the input.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Every node's record, breadth-first so the hot upper levels sit together.
    arena: Vec<u32>,
    /// Direct child tables of dense nodes, `segment_ids.len()` slots each.
    tables: Vec<u32>,
    /// Literal segments interned to ids, so an event segment is hashed once per step.
    segment_ids: FxHashMap<Box<[u8]>, u32>,
    /// Endpoints with a pattern that is exactly `*` or `**`.
    match_all: Vec<u32>,
    endpoint_count: usize,
}

/// Grows the trie pattern by pattern, then freezes it into a [`Matcher`].
struct Builder {
    nodes: Vec<BuildNode>,
    segment_ids: FxHashMap<Box<[u8]>, u32>,
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
                    let seg = *self
                        .segment_ids
                        .entry(literal.as_bytes().into())
                        .or_insert(next_id);
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
        let segment_count = self.segment_ids.len();
        let mut literal: Vec<Vec<(u32, u32)>> = vec![Vec::new(); self.nodes.len()];
        for (&(parent, seg), &child) in &self.edges {
            literal[parent as usize].push((seg, child));
        }
        // Breadth-first order, and each node's offset in the arena.
        let mut order = vec![ROOT];
        let mut offset = vec![NONE; self.nodes.len()];
        let mut end = 0;
        let mut i = 0;
        while i < order.len() {
            let old = order[i] as usize;
            literal[old].sort_unstable();
            let node = &self.nodes[old];
            // Offsets are node ids: one must never reach NONE.
            offset[old] = u32::try_from(end)
                .ok()
                .filter(|&at| at != NONE)
                .expect("a trie of over 800 million nodes");
            let children = literal[old].len();
            let inline_children = if is_dense(children, segment_count) {
                0
            } else {
                2 * children
            };
            end += HEADER + node.endpoints.len() + inline_children;
            let kids = literal[old].iter().map(|&(_, c)| c);
            order.extend(
                kids.chain([node.star, node.globstar])
                    .filter(|&c| c != NONE),
            );
            i += 1;
        }
        let at = |old: u32| {
            if old == NONE {
                NONE
            } else {
                offset[old as usize]
            }
        };
        let mut arena = Vec::with_capacity(end);
        let mut tables = Vec::new();
        for &old in &order {
            let node = &self.nodes[old as usize];
            let children = &literal[old as usize];
            let table = if is_dense(children.len(), segment_count) {
                let base = tables.len();
                tables.resize(base + segment_count, NONE);
                for &(seg, child) in children {
                    tables[base + seg as usize] = at(child);
                }
                base as u32
            } else {
                NONE
            };
            let flags = (children.len() as u32) << 1 | if node.loops { LOOPS } else { 0 };
            arena.extend([at(node.star), at(node.globstar), flags]);
            arena.extend([node.endpoints.len() as u32, table]);
            arena.extend_from_slice(&node.endpoints);
            if table == NONE {
                arena.extend(children.iter().map(|&(seg, _)| seg));
                arena.extend(children.iter().map(|&(_, child)| at(child)));
            }
        }
        let mut match_all = self.match_all;
        match_all.sort_unstable();
        match_all.dedup();
        Matcher {
            arena,
            tables,
            segment_ids: self.segment_ids,
            match_all,
            endpoint_count,
        }
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

    /// The endpoints whose patterns match `event`, ascending and without repeats.
    pub fn matches(&self, event: &str) -> Result<Vec<u32>, GlobError> {
        let (ids, _) = self.matches_many_flat(&[event])?;
        Ok(ids)
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
        let mut lanes: Vec<Lane> = (0..LANES.min(events.len()))
            .map(|_| Lane::default())
            .collect();
        let mut flat = Vec::with_capacity(events.len() * 2);
        let mut ends = Vec::with_capacity(events.len());
        for group in events.chunks(LANES) {
            for (lane, event) in lanes.iter_mut().zip(group) {
                self.start(lane, event.as_ref())?;
            }
            let lanes = &mut lanes[..group.len()];
            // One segment of every lane per round; a round's prefetches land during the next.
            while lanes
                .iter_mut()
                .fold(false, |ran, lane| self.step(lane) | ran)
            {}
            for lane in lanes.iter() {
                self.collect(lane, &mut flat);
                ends.push(flat.len());
            }
        }
        Ok((flat, ends))
    }

    /// Validates `event` and loads its segment ids into `lane`, at the root.
    fn start(&self, lane: &mut Lane, event: &str) -> Result<(), GlobError> {
        validate_event(event)?;
        lane.segments.clear();
        lane.segments.extend(
            event
                .as_bytes()
                .split(|&b| b == b'.')
                .map(|segment| self.segment_ids.get(segment).copied().unwrap_or(NONE)),
        );
        lane.segments.reverse();
        lane.live.clear();
        lane.live.push(ROOT);
        Ok(())
    }

    /// Advances `lane` by one event segment; false when it has nothing left to do.
    fn step(&self, lane: &mut Lane) -> bool {
        if lane.live.is_empty() {
            return false;
        }
        let Some(seg) = lane.segments.pop() else {
            return false;
        };
        let Lane { live, next, .. } = lane;
        next.clear();
        for &id in live.iter() {
            let node = &self.arena[id as usize..];
            if let Some(child) = self.literal_child(node, seg) {
                push_unique(next, child);
            }
            for child in [node[STAR], node[GLOBSTAR]] {
                if child != NONE {
                    push_unique(next, child);
                }
            }
            if node[FLAGS] & LOOPS != 0 {
                push_unique(next, id);
            }
        }
        std::mem::swap(live, next);
        for &id in live.iter() {
            prefetch(&self.arena[id as usize..]);
        }
        true
    }

    fn literal_child(&self, node: &[u32], seg: u32) -> Option<u32> {
        let count = (node[FLAGS] >> 1) as usize;
        if seg == NONE || count == 0 {
            return None;
        }
        let child = if node[TABLE] != NONE {
            self.tables[node[TABLE] as usize + seg as usize]
        } else {
            let segments = &node[HEADER + node[ENDPOINT_COUNT] as usize..][..2 * count];
            let i = segments[..count].binary_search(&seg).ok()?;
            segments[count + i]
        };
        (child != NONE).then_some(child)
    }

    /// Appends the endpoints of the nodes `lane` ended on (ascending, no repeats); a lane that
    /// ran out of live nodes early has none.
    fn collect(&self, lane: &Lane, out: &mut Vec<u32>) {
        let start = out.len();
        for &id in &lane.live {
            let node = &self.arena[id as usize..];
            out.extend_from_slice(&node[HEADER..HEADER + node[ENDPOINT_COUNT] as usize]);
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
    }
}

/// One event being matched: its segment ids still to consume (last first) and its live nodes.
#[derive(Debug, Default)]
struct Lane {
    segments: Vec<u32>,
    live: Vec<u32>,
    next: Vec<u32>,
}

/// Live-state sets stay small (one per distinct trie path alive), so a linear scan beats hashing.
fn push_unique(set: &mut Vec<u32>, id: u32) {
    if !set.contains(&id) {
        set.push(id);
    }
}

/// Asks the CPU to start loading a node's record (its first two cache lines) now.
#[inline(always)]
fn prefetch(record: &[u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let at = record.as_ptr().cast::<i8>();
        // SAFETY: a prefetch is a hint that never faults or reads into Rust-visible state,
        // `at` points into a live slice, and SSE is part of the x86_64 baseline.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(at);
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = record;
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

    /// DESIGN.md's rules the slow, obvious way: segment by segment, `**` tried at every length.
    fn reference(pattern: &[&str], event: &[&str]) -> bool {
        match (pattern.first(), event.first()) {
            (None, None) => true,
            (None, _) | (_, None) => false,
            (Some(&"**"), _) => (1..=event.len()).any(|n| reference(&pattern[1..], &event[n..])),
            (Some(&p), Some(&e)) => (p == "*" || p == e) && reference(&pattern[1..], &event[1..]),
        }
    }

    #[test]
    fn large_tries_agree_with_the_reference() {
        // 2,000 patterns over 300 words: the root and `*` nodes get direct tables, deeper nodes
        // sorted runs; 500 events go through 32 groups of lanes, many dying early.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) % n
        };
        let word = |next: &mut dyn FnMut(u64) -> u64| match next(20) {
            0 => "*".to_owned(),
            1 => "**".to_owned(),
            _ => format!("w{}", next(300)),
        };
        let patterns: Vec<Vec<String>> = (0..2_000)
            .map(|_| {
                vec![(0..1 + next(4))
                    .map(|_| word(&mut next))
                    .collect::<Vec<_>>()
                    .join(".")]
            })
            .collect();
        let events: Vec<String> = (0..500)
            .map(|_| {
                (0..1 + next(5))
                    .map(|_| format!("w{}", next(300)))
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect();
        let matcher = Matcher::new(&patterns).unwrap();
        let found = matcher.matches_many(&events).unwrap();
        for (event, ids) in events.iter().zip(&found) {
            let segments: Vec<&str> = event.split('.').collect();
            let expected: Vec<u32> = (0..patterns.len() as u32)
                .filter(|&i| {
                    let pattern: Vec<&str> = patterns[i as usize][0].split('.').collect();
                    pattern == ["*"] || pattern == ["**"] || reference(&pattern, &segments)
                })
                .collect();
            assert_eq!(ids, &expected, "{event}");
            assert_eq!(&matcher.matches(event).unwrap(), ids);
        }
        assert!(found.iter().filter(|ids| !ids.is_empty()).count() > 50);
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
