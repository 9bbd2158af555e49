//! The identity graph: interned identifiers, the links seen between them,
//! and connected components by union-find with per-type limits.
//!
//! Everything here is pure and deterministic: the outcome depends only on
//! the set of identifiers and links (with the time each was first seen)
//! and on the previous assignment of profile ids — never on the order in
//! which files or rows arrived. Links are tried strongest first (by the
//! priority of their weaker end, then first-seen time, then value), so a
//! limit such as "one `user_id` per profile" keeps the earliest strong link
//! and refuses the later one: the shared-computer case gives two profiles.
//! Only components where that order can matter (a limit could refuse a
//! link, or two previous profiles meet) are ordered; the others are taken
//! from one unordered union-find pass.

use std::sync::Arc;

use datafusion::common::HashMap;

use uuid::Uuid;

use super::interner::Interner;
use super::partial::Scope;
use super::table::TagTable;

mod resolve;

/// Index of an interned identifier.
pub type NodeId = u32;

/// One identifier type as the graph sees it.
#[derive(Debug, Clone)]
pub struct TypeRule {
    pub name: String,
    pub priority: u32,
    pub max_per_profile: Option<u32>,
}

/// A link between two identifiers seen together, first seen at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The smaller node number.
    pub a: NodeId,
    pub b: NodeId,
    pub at: i64,
}

/// Why an identifier or link was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The value is on the blocked list.
    BlockedValue { node: NodeId },
    /// The value was seen with too many distinct values of `other_type`.
    TooManyNeighbours {
        node: NodeId,
        other_type: u16,
        count: u32,
    },
    /// An administrator blocked this link (`panorama identity block`).
    BlockedLink { a: NodeId, b: NodeId },
    /// Linking would put more than the limit of `limited_type` in a profile.
    LimitExceeded {
        a: NodeId,
        b: NodeId,
        limited_type: u16,
    },
}

/// A profile absorbed into another (or split off) during a resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeEvent {
    pub kind: &'static str,
    /// The id that stops existing (merge) or that was split (split).
    pub from_profile: Uuid,
    /// The id that absorbed it (merge) or the new id of the split part.
    pub to_profile: Uuid,
    /// The identifier whose link caused the merge, or that founds the split.
    pub cause: NodeId,
}

/// The identity graph: interned identifiers (the interner's kind is the
/// identifier type), when each was first and last seen, and the links.
#[derive(Debug, Default)]
pub struct Graph {
    pub types: Vec<TypeRule>,
    pub nodes: Interner,
    pub first_seen: Vec<i64>,
    pub last_seen: Vec<i64>,
    /// Distinct links, sorted by `(a, b)` once [`Graph::settle_edges`] ran.
    pub edges: Vec<Edge>,
    /// The lake's key for new profile ids ([`founding_id`]).
    pub id_key: [u8; 32],
}

/// "Which is older" of an identifier: first seen, type priority, value, type.
type AgeKey<'a> = (i64, u32, &'a str, u16);

/// No node, component or previous profile.
pub(super) const NONE: u32 = u32::MAX;

/// The profile id of each node in the last committed resolution, with the
/// distinct ids numbered densely (one lookup per identifier while reading
/// them, none while resolving).
#[derive(Debug, Default)]
pub struct Previous {
    /// Per node: the number of its previous id in `ids`, or `NONE`.
    of_node: Vec<u32>,
    ids: Vec<Uuid>,
    /// Id → number in `ids`: a [`TagTable`] (one cache line a lookup, no
    /// hashing but a multiply, which the random bits of an id allow).
    numbers: TagTable,
}

/// The hash of a profile id for [`Previous`]'s index: ids are mostly
/// random bits already, the multiply spreads those that are not (tests).
fn id_hash(id: &Uuid) -> u64 {
    let (high, low) = id.as_u64_pair();
    (high ^ low.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Previous {
    /// No previous id for any of `nodes` identifiers.
    pub fn new(nodes: usize) -> Previous {
        Previous {
            of_node: vec![NONE; nodes],
            ..Previous::default()
        }
    }

    /// Node `node` was in profile `id`.
    pub fn set(&mut self, node: NodeId, id: Uuid) {
        self.of_node[node as usize] = self.number(id);
    }

    /// The number of id `id`, numbered now if it is new.
    pub fn number(&mut self, id: Uuid) -> u32 {
        let hash = id_hash(&id);
        let ids = &self.ids;
        match self.numbers.find(hash, |k| ids[k as usize] == id) {
            Some(k) => k,
            None => {
                let k = self.ids.len() as u32;
                self.ids.push(id);
                self.numbers.insert(hash, k);
                k
            }
        }
    }

    /// Node `node` was in the profile of number `number` (one of
    /// [`Previous::number`]'s), or in none (`None`).
    pub fn set_number(&mut self, node: NodeId, number: Option<u32>) {
        self.of_node[node as usize] = number.unwrap_or(NONE);
    }

    /// The previous profile id of `node`, if it had one.
    pub fn of(&self, node: NodeId) -> Option<Uuid> {
        match self.of_node.get(node as usize) {
            Some(&p) if p != NONE => Some(self.ids[p as usize]),
            _ => None,
        }
    }

    /// The previous ids of `assignment` (one per node).
    pub fn from_assignment(assignment: &[Option<Uuid>]) -> Previous {
        let mut previous = Previous::new(assignment.len());
        // Profiles have several identifiers: room for a third as many ids
        // at once, rather than rehashing as they come.
        previous.reserve_ids(assignment.len() / 3);
        for (n, id) in assignment.iter().enumerate() {
            if let Some(id) = id {
                previous.set(n as NodeId, *id);
            }
        }
        previous
    }

    /// The distinct previous ids, by number.
    pub fn ids(&self) -> &[Uuid] {
        &self.ids
    }

    /// Per node: the number of its previous id in [`Previous::ids`], or
    /// `u32::MAX`.
    pub fn numbers(&self) -> &[u32] {
        &self.of_node
    }

    /// No previous id for the nodes from `self`'s end up to `nodes`.
    pub fn extend_to(&mut self, nodes: usize) {
        self.of_node.resize(nodes.max(self.of_node.len()), NONE);
    }

    /// Free the id → number map once every id is set. [`Previous::holds`]
    /// then scans the ids: the resolution, which asks it for every new
    /// id, is given unsealed ones.
    pub fn seal(&mut self) {
        self.numbers = TagTable::new();
    }

    /// Make room for `ids` distinct previous ids at once, rather than
    /// rehashing as they come.
    pub fn reserve_ids(&mut self, ids: usize) {
        self.numbers.reserve(ids);
        self.ids.reserve(ids);
    }

    /// Whether `id` is one of the previous ids: a lookup unless the map
    /// was freed ([`Previous::seal`]).
    pub fn holds(&self, id: &Uuid) -> bool {
        match self.numbers.entries() == self.ids.len() {
            true => {
                let ids = &self.ids;
                self.numbers
                    .find(id_hash(id), |k| ids[k as usize] == *id)
                    .is_some()
            }
            false => self.ids.contains(id),
        }
    }

    /// After the last layer of a stored assignment is set: drop the ids
    /// no node holds any more (profiles a later layer merged away), so that
    /// the ids are those [`Previous::from_assignment`] of the final
    /// assignment would list (numbered in file order rather than node
    /// order, which nothing depends on). The id → number map is kept for
    /// [`Previous::holds`].
    pub fn finish(&mut self) {
        let mut used = vec![false; self.ids.len()];
        for &p in &self.of_node {
            if p != NONE {
                used[p as usize] = true;
            }
        }
        if used.iter().all(|&u| u) {
            return;
        }
        let mut renumbered = vec![NONE; self.ids.len()];
        let mut kept = Vec::with_capacity(self.ids.len());
        for (p, _) in used.iter().enumerate().filter(|(_, u)| **u) {
            renumbered[p] = kept.len() as u32;
            kept.push(self.ids[p]);
        }
        self.ids = kept;
        for p in self.of_node.iter_mut().filter(|p| **p != NONE) {
            *p = renumbered[*p as usize];
        }
        self.numbers = TagTable::new();
        self.numbers.reserve(self.ids.len());
        for (k, id) in self.ids.iter().enumerate() {
            self.numbers.insert(id_hash(id), k as u32);
        }
    }
}

/// The outcome of a resolution.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Profile id of each node, `None` for rejected (blocked) nodes; after
    /// a partial resolution, of the nodes of its scope only, in their
    /// order. Read it with [`Resolution::profile`].
    pub(super) assigned: Vec<Option<Uuid>>,
    pub rejections: Vec<Rejection>,
    pub merges: Vec<MergeEvent>,
    pub profiles: usize,
    pub new_profiles: usize,
    /// Members of profile `c`: `members[starts[c]..starts[c + 1]]`, its id
    /// `component_ids[c]` (see [`Resolution::components`]).
    pub(super) members: Vec<NodeId>,
    pub(super) starts: Vec<u32>,
    pub(super) component_ids: Vec<Uuid>,
    /// When only part of the graph was resolved again (an incremental
    /// refresh, [`super::partial`]): those identifiers, and the previous
    /// ids, which every other one kept. The components are only the
    /// profiles of the part.
    pub(super) partial: Option<(Scope, Arc<Previous>)>,
    /// Milliseconds spent finding the components: one union-find pass over
    /// all links, then ordering and joining again (with the limits and the
    /// merge bookkeeping) the links of the components where order matters.
    /// That is what SQL label propagation does by iterating; the rest of a
    /// resolution is guards and stable ids.
    pub union_find_ms: u64,
}

impl Resolution {
    /// The profile id of node `n`; `None` for a rejected (blocked) node.
    pub fn profile(&self, n: NodeId) -> Option<Uuid> {
        match &self.partial {
            Some((scope, previous)) => match scope.place(n) {
                Some(place) => self.assigned[place],
                None => previous.of(n),
            },
            None => self.assigned[n as usize],
        }
    }

    /// The identifiers resolved again, after a partial resolution.
    pub fn scope(&self) -> Option<&Scope> {
        self.partial.as_ref().map(|(scope, _)| scope)
    }

    /// Each profile's id and members (in no particular order).
    pub fn components(&self) -> impl Iterator<Item = (Uuid, &[NodeId])> {
        self.component_ids.iter().enumerate().map(|(c, &id)| {
            let members = &self.members[self.starts[c] as usize..self.starts[c + 1] as usize];
            (id, members)
        })
    }
}

/// What a resolution may use (see [`Graph::usable`]).
#[derive(Debug, Default)]
pub struct Usable {
    /// Per node: neither blocked nor over the cardinality guard.
    pub node: Vec<bool>,
    /// Links an administrator blocked, as `(a, b)` with `a < b`.
    pub cut: std::collections::HashSet<(NodeId, NodeId)>,
    /// Why the others are not used: values, then guards, then links.
    pub rejections: Vec<Rejection>,
}

impl Usable {
    /// Whether the link `a`–`b` (`a < b`) joins two usable identifiers and
    /// is not blocked.
    pub fn link(&self, a: NodeId, b: NodeId) -> bool {
        self.node[a as usize]
            && self.node[b as usize]
            && (self.cut.is_empty() || !self.cut.contains(&(a, b)))
    }
}

impl Graph {
    /// A graph of the identifiers `nodes` (no sightings, no links yet).
    pub fn new(types: Vec<TypeRule>, nodes: Interner) -> Graph {
        let n = nodes.len();
        Graph {
            types,
            nodes,
            first_seen: vec![i64::MAX; n],
            last_seen: vec![i64::MIN; n],
            edges: Vec::new(),
            id_key: [0; 32],
        }
    }

    /// Number of identifiers.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The identifier type of node `n`.
    pub fn id_type(&self, n: NodeId) -> u16 {
        self.nodes.kind(n)
    }

    /// The (normalised) value of node `n`.
    pub fn value(&self, n: NodeId) -> &str {
        self.nodes.get(n)
    }

    /// Look an identifier up (while the interner keeps its index).
    pub fn find(&self, id_type: u16, value: &str) -> Option<NodeId> {
        self.nodes.find(id_type, value)
    }

    /// Intern an identifier seen at `at` (tests and small graphs).
    pub fn observe(&mut self, id_type: u16, value: &str, at: i64) -> NodeId {
        let id = self.nodes.intern(id_type, value);
        if id as usize == self.first_seen.len() {
            self.first_seen.push(i64::MAX);
            self.last_seen.push(i64::MIN);
        }
        self.seen(id, at);
        id
    }

    /// Record a sighting of node `id` at `at`.
    pub fn seen(&mut self, id: NodeId, at: i64) {
        let (first, last) = (
            &mut self.first_seen[id as usize],
            &mut self.last_seen[id as usize],
        );
        *first = (*first).min(at);
        *last = (*last).max(at);
    }

    /// Record that `a` and `b` were seen together at `at` (call
    /// [`Graph::settle_edges`] before resolving).
    pub fn link(&mut self, a: NodeId, b: NodeId, at: i64) {
        if a != b {
            self.edges.push(Edge {
                a: a.min(b),
                b: a.max(b),
                at,
            });
        }
    }

    /// Sort the links by their ends and keep one per pair, seen first at
    /// the earliest of its sightings.
    pub fn settle_edges(&mut self) {
        self.edges.sort_unstable_by_key(|e| (e.a, e.b, e.at));
        self.edges
            .dedup_by(|later, first| later.a == first.a && later.b == first.b);
    }

    /// The sort key of a node for "which is older": first seen, then type
    /// priority, then value, then type — total and independent of arrival
    /// order.
    fn age_key(&self, n: NodeId) -> AgeKey<'_> {
        let t = self.nodes.kind(n);
        (
            self.first_seen[n as usize],
            self.types[t as usize].priority,
            self.nodes.get(n),
            t,
        )
    }

    /// Resolve profiles.
    ///
    /// `blocked(node)` says whether a value is on the blocked list;
    /// `blocked_link(a, b)` whether an administrator blocked that link;
    /// `max_neighbours` is the cardinality guard; `previous` gives each
    /// node's profile id from the last committed resolution, if any.
    ///
    /// Cost: one pass of union-find over all links; only components where
    /// the order of links matters (a limit could refuse one, or two previous
    /// profiles meet) are sorted and joined again in order. Grouping the
    /// members is a counting sort, so a resolution is O(links + nodes) but
    /// for those few components.
    pub fn resolve(
        &self,
        blocked: impl Fn(NodeId) -> bool + Sync,
        blocked_link: impl Fn(NodeId, NodeId) -> bool,
        max_neighbours: u32,
        previous: &Previous,
    ) -> Resolution {
        self.resolve_with(blocked, blocked_link, max_neighbours, previous, false)
    }

    /// [`Graph::resolve`]; with `order_everything`, every component is
    /// joined link by link in order, not only those where order matters
    /// (the shortcut must not change the outcome: a test compares both).
    fn resolve_with(
        &self,
        blocked: impl Fn(NodeId) -> bool + Sync,
        blocked_link: impl Fn(NodeId, NodeId) -> bool,
        max_neighbours: u32,
        previous: &Previous,
        order_everything: bool,
    ) -> Resolution {
        let usable = self.usable(blocked, blocked_link, max_neighbours);
        self.resolve_whole(&usable, previous, order_everything)
    }

    /// Resolve the whole graph with the identifiers and links `usable`
    /// allows (see [`Graph::resolve`]).
    pub fn resolve_allowed(&self, usable: &Usable, previous: &Previous) -> Resolution {
        self.resolve_whole(usable, previous, false)
    }

    fn resolve_whole(
        &self,
        usable: &Usable,
        previous: &Previous,
        order_everything: bool,
    ) -> Resolution {
        let mut resolution = self.resolve_usable(usable, previous, None, order_everything);
        let refused = std::mem::take(&mut resolution.rejections);
        resolution.rejections = usable.rejections.clone();
        resolution.rejections.extend(refused);
        resolution
    }

    /// Which identifiers and links a resolution may use: not those on the
    /// blocked list (`blocked`), nor those seen with more than
    /// `max_neighbours` distinct values of one other type (the
    /// cardinality guard), nor the links an administrator blocked
    /// (`blocked_link`). O(nodes + links), whatever part is resolved.
    pub fn usable(
        &self,
        blocked: impl Fn(NodeId) -> bool + Sync,
        blocked_link: impl Fn(NodeId, NodeId) -> bool,
        max_neighbours: u32,
    ) -> Usable {
        let n = self.nodes.len();
        let types = self.nodes.kinds();
        let mut usable = vec![true; n];
        // Every value compared with the blocked lists: two halves, each on
        // a core of its own.
        let scan = |part: &mut [bool], from: usize| {
            let mut found = Vec::new();
            for (i, usable) in part.iter_mut().enumerate() {
                let node = (from + i) as NodeId;
                if blocked(node) {
                    *usable = false;
                    found.push(Rejection::BlockedValue { node });
                }
            }
            found
        };
        let (mut rejections, rest) = in_two_halves(&mut usable, scan);
        rejections.extend(rest);
        // Cardinality guard: distinct neighbours of each other type (links
        // are distinct pairs). Only a node with more links than the limit
        // can have too many of one type: a byte per node finds those (in
        // cache, where a count per node and type would not be), then their
        // links are counted by type.
        let cap = max_neighbours.min(u32::from(u8::MAX) - 1);
        // Each half of the links counted on a core of its own.
        let count = |edges: &[Edge], _: usize| {
            let mut degree = vec![0u8; n];
            for &Edge { a, b, .. } in edges {
                if usable[a as usize] && usable[b as usize] {
                    for end in [a, b] {
                        let d = &mut degree[end as usize];
                        *d = d.saturating_add(1);
                    }
                }
            }
            degree
        };
        let (mut degree, other) = over_two_halves(&self.edges, count);
        let mut any = false;
        for (d, o) in degree.iter_mut().zip(other) {
            *d = d.saturating_add(o);
            any |= u32::from(*d) > cap;
        }
        let candidate = |i: NodeId| u32::from(degree[i as usize]) > cap;
        let mut by_type: HashMap<(NodeId, u16), u32> = HashMap::new();
        // No identifier with more links than the limit: none is guarded.
        let edges = match any {
            true => &self.edges[..],
            false => &[],
        };
        for &Edge { a, b, .. } in edges {
            if usable[a as usize] && usable[b as usize] {
                if candidate(a) {
                    *by_type.entry((a, types[b as usize])).or_default() += 1;
                }
                if candidate(b) {
                    *by_type.entry((b, types[a as usize])).or_default() += 1;
                }
            }
        }
        drop(degree);
        let mut guarded: Vec<((NodeId, u16), u32)> = by_type
            .into_iter()
            .filter(|&(_, count)| count > max_neighbours)
            .collect();
        guarded.sort_unstable();
        for ((node, other_type), count) in guarded {
            if usable[node as usize] {
                usable[node as usize] = false;
                rejections.push(Rejection::TooManyNeighbours {
                    node,
                    other_type,
                    count,
                });
            }
        }

        // Links blocked by an administrator, in a stable order.
        let mut cut: Vec<(NodeId, NodeId)> = self
            .edges
            .iter()
            .filter(|e| blocked_link(e.a, e.b))
            .map(|e| (e.a, e.b))
            .collect();
        cut.sort_unstable();
        let cut: std::collections::HashSet<(NodeId, NodeId)> = cut
            .into_iter()
            .inspect(|&(a, b)| rejections.push(Rejection::BlockedLink { a, b }))
            .collect();
        Usable {
            node: usable,
            cut,
            rejections,
        }
    }

    /// Every node's place in the order "which is older" (0 = oldest): by
    /// first sighting, then type priority, then value, then type — total
    /// and independent of arrival order. One sort, after which every age
    /// comparison of a resolution is a comparison of two numbers.
    fn age_ranks(&self) -> Vec<u32> {
        let types = self.nodes.kinds();
        let mut by_age: Vec<(i64, u32, NodeId)> = (0..self.len() as NodeId)
            .map(|n| {
                let t = types[n as usize];
                (
                    self.first_seen[n as usize],
                    self.types[t as usize].priority,
                    n,
                )
            })
            .collect();
        by_age.sort_unstable_by(|x, y| {
            (x.0, x.1)
                .cmp(&(y.0, y.1))
                .then_with(|| self.age_key(x.2).cmp(&self.age_key(y.2)))
        });
        let mut rank = vec![0u32; self.len()];
        for (r, &(_, _, n)) in by_age.iter().enumerate() {
            rank[n as usize] = r as u32;
        }
        rank
    }
}

/// Run `work` on the two halves of `items` (each with the place of its
/// first item), each on a core of its own; a short slice is one "half"
/// done here. A panic of the other thread goes on up (it is a bug).
pub(super) fn in_two_halves<T: Send, R: Send>(
    items: &mut [T],
    work: impl Fn(&mut [T], usize) -> R + Sync,
) -> (R, R) {
    let half = half_of(items.len());
    let (low, high) = items.split_at_mut(half);
    on_two_cores(|| work(low, 0), || work(high, half))
}

/// [`in_two_halves`] for items read, not written.
pub(super) fn over_two_halves<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&[T], usize) -> R + Sync,
) -> (R, R) {
    let half = half_of(items.len());
    let (low, high) = items.split_at(half);
    on_two_cores(|| work(low, 0), || work(high, half))
}

/// Where [`in_two_halves`] splits `len` items.
fn half_of(len: usize) -> usize {
    match len >= 1 << 16 {
        true => len / 2,
        false => len,
    }
}

/// `here` on this thread and `there` on another, together.
fn on_two_cores<R: Send>(here: impl FnOnce() -> R, there: impl FnOnce() -> R + Send) -> (R, R) {
    std::thread::scope(|s| {
        let other = s.spawn(there);
        let here = here();
        let there = other
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (here, there)
    })
}

/// The id of a profile founded by identifier `type:value`: a keyed hash
/// (HMAC-SHA-256 under the lake's `profile_ids` secret) laid out as a
/// UUID (version 8, "custom"). The same identifier gives the same id in
/// every refresh and rebuild of the lake, and nobody without the key can
/// confirm a guessed email by computing its id.
pub fn founding_id(key: &[u8; 32], id_type: &str, value: &str) -> Uuid {
    let mac = crate::keyed::hmac_sha256(key, format!("{id_type}:{value}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&mac[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// Profile ids as text (`cdp.*` columns), without a `String` per id.
pub fn profile_id_array(
    ids: impl Iterator<Item = Option<Uuid>>,
) -> datafusion::arrow::array::StringArray {
    let mut builder = datafusion::arrow::array::StringBuilder::new();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    for id in ids {
        match id {
            Some(id) => builder.append_value(id.hyphenated().encode_lower(&mut text)),
            None => builder.append_null(),
        }
    }
    builder.finish()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const ANON: u16 = 0;
    const USER: u16 = 1;
    const EMAIL: u16 = 2;

    /// An empty graph of three types: `anonymous_id`, `user_id` (at most
    /// one per profile) and `email`.
    pub(in crate::identity) fn graph() -> Graph {
        let t = |name: &str, priority, max| TypeRule {
            name: name.into(),
            priority,
            max_per_profile: max,
        };
        Graph::new(
            vec![
                t("anonymous_id", 4, None),
                t("user_id", 1, Some(1)),
                t("email", 2, None),
            ],
            Interner::new(),
        )
    }

    #[test]
    fn recorded_layers_number_the_ids_as_the_final_assignment() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        // Base: profiles a (nodes 0, 2) and b (1, 3), node 4 in none;
        // a later layer moves a's nodes to c and takes node 1 out.
        let base = [
            (0, Some(a)),
            (2, Some(a)),
            (1, Some(b)),
            (3, Some(b)),
            (4, None),
        ];
        let layer = [(0, Some(c)), (2, Some(c)), (1, None)];
        let mut recorded = Previous::new(5);
        recorded.reserve_ids(2);
        for &(node, id) in base.iter().chain(&layer) {
            let number = id.map(|id| recorded.number(id));
            recorded.set_number(node, number);
        }
        recorded.finish();
        let mut last = [None; 5];
        for &(node, id) in base.iter().chain(&layer) {
            last[node as usize] = id;
        }
        let rebuilt = Previous::from_assignment(&last);
        for node in 0..5 {
            assert_eq!(recorded.of(node), rebuilt.of(node), "node {node}");
        }
        let mut ids = recorded.ids().to_vec();
        ids.sort();
        assert_eq!(ids, vec![b, c], "a, merged away, is no previous id");
        assert!(recorded.holds(&b) && recorded.holds(&c) && !recorded.holds(&a));
        let mut sealed = rebuilt;
        sealed.seal();
        assert!(
            sealed.holds(&c) && !sealed.holds(&a),
            "sealed: still answers"
        );
    }

    fn pair(g: &mut Graph, (ta, va): (u16, &str), (tb, vb): (u16, &str), at: i64) {
        let a = g.observe(ta, va, at);
        let b = g.observe(tb, vb, at);
        g.link(a, b, at);
        g.settle_edges();
    }

    fn resolve(g: &Graph, previous: &HashMap<NodeId, Uuid>) -> Resolution {
        g.resolve(
            |n| g.value(n) == "test@test.com",
            |_, _| false,
            3,
            &previous_of(g, previous),
        )
    }

    fn previous_of(g: &Graph, previous: &HashMap<NodeId, Uuid>) -> Previous {
        let mut p = Previous::new(g.nodes.len());
        for (&node, &id) in previous {
            p.set(node, id);
        }
        p
    }

    fn id(g: &Graph, r: &Resolution, t: u16, v: &str) -> Option<Uuid> {
        r.assigned[g.find(t, v).unwrap() as usize]
    }

    #[test]
    fn cookie_then_login_then_email_on_another_device_is_one_person() {
        let mut g = graph();
        pair(&mut g, (ANON, "cookie-laptop"), (USER, "u1"), 10);
        pair(&mut g, (USER, "u1"), (EMAIL, "jane@x.com"), 11);
        pair(&mut g, (ANON, "cookie-phone"), (EMAIL, "jane@x.com"), 20);
        let r = resolve(&g, &HashMap::new());
        assert_eq!(r.profiles, 1);
        let p = id(&g, &r, ANON, "cookie-phone");
        assert_eq!(p, id(&g, &r, ANON, "cookie-laptop"));
        // cookie-laptop and u1 were first seen together: the stronger type wins the tie.
        assert_eq!(
            p,
            Some(founding_id(&[0; 32], "user_id", "u1")),
            "the oldest identifier founds the id"
        );
    }

    #[test]
    fn a_shared_computer_gives_two_profiles_and_records_the_refused_link() {
        let mut g = graph();
        pair(&mut g, (ANON, "family-pc"), (USER, "alice"), 10);
        pair(&mut g, (ANON, "family-pc"), (USER, "bob"), 20);
        let r = resolve(&g, &HashMap::new());
        assert_eq!(r.profiles, 2);
        assert_eq!(
            id(&g, &r, ANON, "family-pc"),
            id(&g, &r, USER, "alice"),
            "the earlier login keeps the cookie"
        );
        assert_ne!(id(&g, &r, USER, "alice"), id(&g, &r, USER, "bob"));
        assert!(matches!(
            r.rejections[..],
            [Rejection::LimitExceeded {
                limited_type: USER,
                ..
            }]
        ));
    }

    #[test]
    fn blocked_and_over_shared_values_link_nobody() {
        let mut g = graph();
        pair(&mut g, (USER, "a"), (EMAIL, "test@test.com"), 1);
        pair(&mut g, (USER, "b"), (EMAIL, "test@test.com"), 2);
        for (i, cookie) in ["c1", "c2", "c3", "c4"].iter().enumerate() {
            pair(&mut g, (ANON, cookie), (EMAIL, "shared@corp.com"), i as i64);
        }
        let r = resolve(&g, &HashMap::new());
        assert_ne!(id(&g, &r, USER, "a"), id(&g, &r, USER, "b"));
        assert_eq!(id(&g, &r, EMAIL, "test@test.com"), None);
        assert_eq!(
            id(&g, &r, EMAIL, "shared@corp.com"),
            None,
            "4 cookies > guard of 3"
        );
        assert_ne!(id(&g, &r, ANON, "c1"), id(&g, &r, ANON, "c2"));
        assert!(
            r.rejections
                .iter()
                .any(|x| matches!(x, Rejection::TooManyNeighbours { count: 4, .. }))
        );
    }

    #[test]
    fn when_profiles_merge_the_older_id_survives_and_the_merge_is_recorded() {
        let mut g = graph();
        pair(&mut g, (ANON, "old-cookie"), (USER, "u1"), 10);
        pair(&mut g, (ANON, "new-cookie"), (EMAIL, "jane@x.com"), 50);
        let first = resolve(&g, &HashMap::new());
        assert_eq!(first.profiles, 2);
        let previous: HashMap<NodeId, Uuid> = (0..g.nodes.len() as NodeId)
            .filter_map(|i| first.assigned[i as usize].map(|p| (i, p)))
            .collect();
        let old_id = id(&g, &first, USER, "u1").unwrap();
        let young_id = id(&g, &first, EMAIL, "jane@x.com").unwrap();

        pair(&mut g, (USER, "u1"), (EMAIL, "jane@x.com"), 60);
        let second = resolve(&g, &previous);
        assert_eq!(second.profiles, 1);
        assert_eq!(id(&g, &second, EMAIL, "jane@x.com"), Some(old_id));
        assert_eq!(
            second.merges,
            vec![MergeEvent {
                kind: "merge",
                from_profile: young_id,
                to_profile: old_id,
                cause: g.find(EMAIL, "jane@x.com").unwrap(),
            }]
        );
    }

    #[test]
    fn arrival_order_does_not_change_the_outcome() {
        let links = [
            ((ANON, "k1"), (USER, "u1"), 5),
            ((ANON, "k1"), (USER, "u2"), 7),
            ((ANON, "k2"), (EMAIL, "e@x.com"), 3),
            ((USER, "u2"), (EMAIL, "e@x.com"), 9),
        ];
        let outcome = |order: &[usize]| {
            let mut g = graph();
            for &i in order {
                let (a, b, at) = links[i];
                pair(&mut g, a, b, at);
            }
            let r = resolve(&g, &HashMap::new());
            let mut ids: Vec<(String, Uuid)> = ["k1", "k2"]
                .iter()
                .map(|k| (k.to_string(), id(&g, &r, ANON, k).unwrap()))
                .chain(
                    ["u1", "u2"]
                        .iter()
                        .map(|u| (u.to_string(), id(&g, &r, USER, u).unwrap())),
                )
                .collect();
            ids.sort();
            ids
        };
        let expected = outcome(&[0, 1, 2, 3]);
        assert_eq!(outcome(&[3, 2, 1, 0]), expected);
        assert_eq!(outcome(&[1, 3, 0, 2]), expected);
    }

    /// Joining only the components where order matters gives exactly what
    /// joining every link in order gives: ids, refused links and merge
    /// history, on random graphs with limits, blocks and previous ids.
    #[test]
    fn the_unordered_shortcut_changes_nothing() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut shortcuts = 0;
        for case in 0..300 {
            let n_values = rng.random_range(2..30);
            let mut g = graph();
            for _ in 0..rng.random_range(1..50) {
                let mut end = || {
                    let t = rng.random_range(0..3u16);
                    (t, format!("v{}", rng.random_range(0..n_values)))
                };
                let (a, b) = (end(), end());
                let at = rng.random_range(0..1_000);
                pair(&mut g, (a.0, &a.1), (b.0, &b.1), at);
            }
            // A previous resolution of part of the graph, in a few profiles
            // (none in every other case: a first refresh).
            let mut previous = Previous::new(g.nodes.len());
            for node in 0..g.nodes.len() as NodeId {
                if case % 2 == 0 && rng.random_bool(0.5) {
                    let id = Uuid::from_u128(rng.random_range(0..4));
                    previous.set(node, id);
                }
            }
            let blocked = |n: NodeId| g.value(n) == "v1";
            let run = |all| g.resolve_with(blocked, |_, _| false, 5, &previous, all);
            let (fast, slow) = (run(false), run(true));
            assert_eq!(fast.assigned, slow.assigned, "case {case}: ids");
            assert_eq!(fast.rejections, slow.rejections, "case {case}: refusals");
            assert_eq!(fast.merges, slow.merges, "case {case}: history");
            assert_eq!(fast.new_profiles, slow.new_profiles, "case {case}");
            shortcuts += usize::from(fast.profiles > 1);
            // The components list every identifier with an id, once.
            let mut listed = 0;
            for (id, members) in fast.components() {
                for &m in members {
                    assert_eq!(fast.assigned[m as usize], Some(id), "case {case}");
                }
                listed += members.len();
            }
            assert_eq!(listed, fast.assigned.iter().flatten().count());
            assert_eq!(fast.components().count(), fast.profiles);
        }
        assert!(shortcuts > 100, "the cases must hold several components");
    }

    /// Random identity graphs fed in random orders: the components always
    /// equal those of a plain reference union-find (no limits, nothing
    /// blocked), and the profile ids never depend on the order.
    #[test]
    fn random_graphs_match_a_reference_union_find_in_any_order() {
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..200 {
            let n_values = rng.random_range(2..40);
            type Link = ((u16, String), (u16, String), i64);
            let links: Vec<Link> = (0..rng.random_range(1..60))
                .map(|_| {
                    let end = |rng: &mut rand_chacha::ChaCha8Rng| {
                        let t = rng.random_range(0..3u16);
                        (t, format!("v{}", rng.random_range(0..n_values)))
                    };
                    let a = end(&mut rng);
                    let b = end(&mut rng);
                    (a, b, rng.random_range(0..1_000))
                })
                .collect();
            let unlimited = |g: &mut Graph| {
                for t in &mut g.types {
                    t.max_per_profile = None;
                }
            };
            let run_with = |order: &[usize], limited: bool| {
                let mut g = graph();
                if !limited {
                    unlimited(&mut g);
                }
                for &i in order {
                    let (a, b, at) = &links[i];
                    pair(&mut g, (a.0, &a.1), (b.0, &b.1), *at);
                }
                let r = g.resolve(
                    |_| false,
                    |_, _| false,
                    u32::MAX,
                    &Previous::new(g.nodes.len()),
                );
                let mut assignment: Vec<((u16, String), Uuid)> = (0..g.len() as NodeId)
                    .zip(&r.assigned)
                    .map(|(n, p)| ((g.id_type(n), g.value(n).to_string()), p.unwrap()))
                    .collect();
                assignment.sort();
                assignment
            };
            let mut order: Vec<usize> = (0..links.len()).collect();
            let expected = run_with(&order, false);
            let expected_limited = run_with(&order, true);
            order.shuffle(&mut rng);
            assert_eq!(
                run_with(&order, false),
                expected,
                "case {case}: order changed the outcome"
            );
            assert_eq!(
                run_with(&order, true),
                expected_limited,
                "case {case}: order changed the outcome under limits"
            );

            // Reference: naive union-find over the same identifiers.
            let keys: Vec<(u16, String)> = expected.iter().map(|(k, _)| k.clone()).collect();
            let index = |k: &(u16, String)| keys.binary_search(k).unwrap();
            let mut parent: Vec<usize> = (0..keys.len()).collect();
            fn root(p: &mut Vec<usize>, x: usize) -> usize {
                if p[x] == x {
                    x
                } else {
                    let r = root(p, p[x]);
                    p[x] = r;
                    r
                }
            }
            for (a, b, _) in &links {
                let (ra, rb) = (root(&mut parent, index(a)), root(&mut parent, index(b)));
                parent[ra] = rb;
            }
            for i in 0..keys.len() {
                for j in 0..keys.len() {
                    let same_ref = root(&mut parent, i) == root(&mut parent, j);
                    let same_ours = expected[i].1 == expected[j].1;
                    assert_eq!(
                        same_ref, same_ours,
                        "case {case}: {:?} vs {:?}",
                        keys[i], keys[j]
                    );
                }
            }
        }
    }
}
