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

use datafusion::common::HashMap;

use uuid::Uuid;

/// Index of an interned identifier.
pub type NodeId = u32;

/// Namespace of profile ids (UUID v5 of the founding identifier).
const PROFILE_NAMESPACE: Uuid = Uuid::from_u128(0x7061_6e6f_7261_6d61_2d70_726f_6669_6c65);

/// One identifier type as the graph sees it.
#[derive(Debug, Clone)]
pub struct TypeRule {
    pub name: String,
    pub priority: u32,
    pub max_per_profile: Option<u32>,
}

/// An interned identifier with the times it was first and last seen.
#[derive(Debug, Clone)]
pub struct Node {
    pub id_type: u16,
    /// Shared with the index: one allocation per identifier.
    pub value: std::sync::Arc<str>,
    pub first_seen: i64,
    pub last_seen: i64,
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

/// The identity graph being built.
#[derive(Debug, Default)]
pub struct Graph {
    pub types: Vec<TypeRule>,
    /// Per identifier type: value → node (looked up by `&str`, no allocation).
    index: Vec<HashMap<std::sync::Arc<str>, NodeId>>,
    pub nodes: Vec<Node>,
    /// Undirected links (smaller id first) → first time seen.
    pub edges: HashMap<(NodeId, NodeId), i64>,
}

/// The outcome of a resolution.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Profile id of each node; `None` for rejected (blocked) nodes.
    pub profile_of: Vec<Option<Uuid>>,
    pub rejections: Vec<Rejection>,
    pub merges: Vec<MergeEvent>,
    pub profiles: usize,
    pub new_profiles: usize,
    /// Milliseconds spent ordering the links and joining them by
    /// union-find (with the limits; the stable-id bookkeeping done in the
    /// same loop is included): what SQL label propagation does by
    /// iterating. The rest of a resolution is guards and stable ids.
    pub union_find_ms: u64,
}

impl Graph {
    pub fn new(types: Vec<TypeRule>) -> Graph {
        Graph {
            index: vec![HashMap::new(); types.len()],
            types,
            ..Graph::default()
        }
    }

    /// Forget every identifier and link, keeping the allocated capacity.
    pub fn clear(&mut self) {
        self.index.iter_mut().for_each(HashMap::clear);
        self.nodes.clear();
        self.edges.clear();
    }

    /// Free the value index and the links once the graph is resolved
    /// (nodes stay): only [`Graph::find`], [`Graph::intern`] and
    /// [`Graph::resolve`] use them.
    pub fn drop_index_and_links(&mut self) {
        self.index = vec![HashMap::new(); self.types.len()];
        self.edges = HashMap::new();
    }

    /// Intern an identifier seen at `at`.
    pub fn observe(&mut self, id_type: u16, value: &str, at: i64) -> NodeId {
        let id = self.intern(id_type, value);
        self.seen(id, at);
        id
    }

    /// Intern an identifier without a sighting (call [`Graph::seen`]).
    pub fn intern(&mut self, id_type: u16, value: &str) -> NodeId {
        match self.index[id_type as usize].get(value) {
            Some(&id) => id,
            None => self.intern_shared(id_type, value.into()),
        }
    }

    /// [`Graph::intern`] of a value already allocated (kept if new).
    pub fn intern_shared(&mut self, id_type: u16, value: std::sync::Arc<str>) -> NodeId {
        if let Some(&id) = self.index[id_type as usize].get(&*value) {
            return id;
        }
        let id = self.nodes.len() as NodeId;
        self.nodes.push(Node {
            id_type,
            value: value.clone(),
            first_seen: i64::MAX,
            last_seen: i64::MIN,
        });
        self.index[id_type as usize].insert(value, id);
        id
    }

    /// Record a sighting of node `id` at `at`.
    pub fn seen(&mut self, id: NodeId, at: i64) {
        let node = &mut self.nodes[id as usize];
        node.first_seen = node.first_seen.min(at);
        node.last_seen = node.last_seen.max(at);
    }

    /// Record that `a` and `b` were seen together at `at`.
    pub fn link(&mut self, a: NodeId, b: NodeId, at: i64) {
        if a == b {
            return;
        }
        let key = (a.min(b), a.max(b));
        let first = self.edges.entry(key).or_insert(at);
        *first = (*first).min(at);
    }

    /// Look an identifier up.
    pub fn find(&self, id_type: u16, value: &str) -> Option<NodeId> {
        self.index.get(id_type as usize)?.get(value).copied()
    }

    /// The sort key of a node for "which is older": first seen, then type
    /// priority, then value — total and independent of arrival order.
    fn age_key(&self, n: NodeId) -> (i64, u32, &str) {
        let node = &self.nodes[n as usize];
        (
            node.first_seen,
            self.types[node.id_type as usize].priority,
            &node.value,
        )
    }

    /// Resolve profiles.
    ///
    /// `blocked(node)` says whether a value is on the blocked list;
    /// `blocked_link(a, b)` whether an administrator blocked that link;
    /// `max_neighbours` is the cardinality guard; `previous` gives each
    /// node's profile id from the last committed resolution, if any.
    pub fn resolve(
        &self,
        blocked: impl Fn(&Node) -> bool,
        blocked_link: impl Fn(&Node, &Node) -> bool,
        max_neighbours: u32,
        previous: impl Fn(NodeId) -> Option<Uuid>,
    ) -> Resolution {
        let n = self.nodes.len();
        let mut resolution = Resolution::default();
        let mut usable = vec![true; n];
        for (i, node) in self.nodes.iter().enumerate() {
            if blocked(node) {
                usable[i] = false;
                resolution
                    .rejections
                    .push(Rejection::BlockedValue { node: i as NodeId });
            }
        }
        // Cardinality guard: distinct neighbours of each other type (links
        // are distinct pairs), counted in one dense array.
        let width = self.types.len();
        let mut neighbours = vec![0u32; n * width];
        for &(a, b) in self.edges.keys() {
            if usable[a as usize] && usable[b as usize] {
                neighbours[a as usize * width + self.nodes[b as usize].id_type as usize] += 1;
                neighbours[b as usize * width + self.nodes[a as usize].id_type as usize] += 1;
            }
        }
        let guarded: Vec<((NodeId, u16), u32)> = neighbours
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count > max_neighbours)
            .map(|(i, &count)| (((i / width) as NodeId, (i % width) as u16), count))
            .collect();
        drop(neighbours);
        for ((node, other_type), count) in guarded {
            if usable[node as usize] {
                usable[node as usize] = false;
                resolution.rejections.push(Rejection::TooManyNeighbours {
                    node,
                    other_type,
                    count,
                });
            }
        }

        // Links blocked by an administrator, in a stable order.
        let mut cut: Vec<(NodeId, NodeId)> = self
            .edges
            .keys()
            .filter(|(a, b)| blocked_link(&self.nodes[*a as usize], &self.nodes[*b as usize]))
            .copied()
            .collect();
        cut.sort_unstable();
        let cut: std::collections::HashSet<(NodeId, NodeId)> = cut
            .into_iter()
            .inspect(|&(a, b)| resolution.rejections.push(Rejection::BlockedLink { a, b }))
            .collect();

        let union_find = std::time::Instant::now();
        // Links, strongest and oldest first. Ties are broken by the two
        // identifiers themselves (type and value, never interning order),
        // so arrival order is irrelevant: first by a stable hash of each
        // end, integers being quick to sort, then by the values.
        let hashes: Vec<u64> = self.nodes.iter().map(stable_hash).collect();
        let mut edges: Vec<(u32, i64, u64, u64, NodeId, NodeId)> = self
            .edges
            .iter()
            .filter(|(ab, _)| !cut.contains(ab))
            .filter(|((a, b), _)| usable[*a as usize] && usable[*b as usize])
            .map(|(&(a, b), &at)| {
                let rank = self.types[self.nodes[a as usize].id_type as usize]
                    .priority
                    .max(self.types[self.nodes[b as usize].id_type as usize].priority);
                let (ha, hb) = (hashes[a as usize], hashes[b as usize]);
                (rank, at, ha.min(hb), ha.max(hb), a, b)
            })
            .collect();
        let ends = |a: NodeId, b: NodeId| {
            let (na, nb) = (&self.nodes[a as usize], &self.nodes[b as usize]);
            let (ka, kb) = ((na.id_type, &*na.value), (nb.id_type, &*nb.value));
            if ka <= kb { (ka, kb) } else { (kb, ka) }
        };
        edges.sort_unstable_by(|x, y| {
            (x.0, x.1, x.2, x.3)
                .cmp(&(y.0, y.1, y.2, y.3))
                .then_with(|| ends(x.4, x.5).cmp(&ends(y.4, y.5)))
        });
        let edges = edges
            .into_iter()
            .map(|(rank, at, _, _, a, b)| (rank, at, a, b));

        let limited: Vec<(u16, u32)> = self
            .types
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.max_per_profile.map(|m| (i as u16, m)))
            .collect();
        let mut sets = UnionFind::new(n, limited.len());
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(slot) = limited.iter().position(|(t, _)| *t == node.id_type) {
                sets.counts[i * limited.len() + slot] = 1;
            }
        }
        let ordering = union_find.elapsed();
        // Previous profile of each root: (age of that profile, id, founder).
        let prev: Vec<Option<Uuid>> = (0..n as NodeId).map(&previous).collect();
        let mut prev_age: HashMap<Uuid, (i64, u32, &str)> = HashMap::new();
        for (i, p) in prev.iter().enumerate() {
            if let (Some(p), true) = (p, usable[i]) {
                let key = self.age_key(i as NodeId);
                prev_age
                    .entry(*p)
                    .and_modify(|k| *k = (*k).min(key))
                    .or_insert(key);
            }
        }
        let mut root_prev: Vec<Option<Uuid>> = prev.clone();
        let mut absorbed: Vec<(Uuid, Uuid, NodeId)> = Vec::new();
        let joining = std::time::Instant::now();
        for (_, _, a, b) in edges {
            let (ra, rb) = (sets.find(a), sets.find(b));
            if ra == rb {
                continue;
            }
            if let Some(slot) = sets.exceeds(ra, rb, &limited) {
                resolution.rejections.push(Rejection::LimitExceeded {
                    a,
                    b,
                    limited_type: limited[slot].0,
                });
                continue;
            }
            let (pa, pb) = (root_prev[ra as usize], root_prev[rb as usize]);
            let survivor = match (pa, pb) {
                (Some(x), Some(y)) if x != y => {
                    let (old, young) = if prev_age[&x] <= prev_age[&y] {
                        (x, y)
                    } else {
                        (y, x)
                    };
                    let cause = if young == y { b } else { a };
                    absorbed.push((young, old, cause));
                    Some(old)
                }
                (Some(x), _) => Some(x),
                (None, y) => y,
            };
            let root = sets.union(ra, rb);
            root_prev[root as usize] = survivor;
        }

        resolution.union_find_ms = (ordering + joining.elapsed()).as_millis() as u64;
        // Components (members oldest first), oldest founder first: one
        // sort of the usable nodes by (root, age), then of the components.
        let mut by_root: Vec<(NodeId, NodeId)> = (0..n as NodeId)
            .filter(|&i| usable[i as usize])
            .map(|i| (sets.find(i), i))
            .collect();
        by_root.sort_unstable_by(|&(ra, x), &(rb, y)| {
            ra.cmp(&rb)
                .then_with(|| self.age_key(x).cmp(&self.age_key(y)))
        });
        let members: Vec<NodeId> = by_root.iter().map(|&(_, m)| m).collect();
        let mut components: Vec<&[NodeId]> = by_root
            .chunk_by(|a, b| a.0 == b.0)
            .scan(0, |at, c| {
                let start = *at;
                *at += c.len();
                Some(&members[start..*at])
            })
            .collect();
        drop(by_root);
        components.sort_unstable_by(|x, y| self.age_key(x[0]).cmp(&self.age_key(y[0])));
        // A previous id goes to the component holding that profile's oldest
        // identifier; other parts of a split get an id of their own.
        let mut claimed: HashMap<Uuid, usize> = HashMap::new();
        for (ci, c) in components.iter().enumerate() {
            for &m in c.iter() {
                if let Some(p) = prev[m as usize]
                    && self.age_key(m) == prev_age[&p]
                {
                    claimed.entry(p).or_insert(ci);
                }
            }
        }
        let mut profile_of = vec![None; n];
        // Ids in use: never given to a second profile.
        let mut taken: std::collections::HashSet<Uuid> = prev.iter().flatten().copied().collect();
        for (ci, c) in components.iter().enumerate() {
            // Oldest previous id claimed by this component survives.
            let mut mine: Vec<Uuid> = c
                .iter()
                .filter_map(|&m| prev[m as usize])
                .filter(|p| claimed.get(p) == Some(&ci))
                .collect();
            mine.sort_unstable_by(|x, y| prev_age[x].cmp(&prev_age[y]).then(x.cmp(y)));
            mine.dedup();
            let id = match mine.first() {
                Some(&p) => p,
                None => {
                    resolution.new_profiles += 1;
                    // The founder's id, unless a profile had it already (its
                    // founder met older data and now sits in another part).
                    let founder = &self.nodes[c[0] as usize];
                    let name = &self.types[founder.id_type as usize].name;
                    let mut id = founding_id(name, &founder.value);
                    let mut n = 1;
                    while taken.contains(&id) {
                        id = founding_id(name, &format!("{}#{n}", founder.value));
                        n += 1;
                    }
                    id
                }
            };
            taken.insert(id);
            // Parts split off a previous profile.
            let mut split_from: Vec<Uuid> = c
                .iter()
                .filter_map(|&m| prev[m as usize])
                .filter(|p| claimed.get(p) != Some(&ci))
                .collect();
            split_from.sort_unstable();
            split_from.dedup();
            for p in split_from {
                resolution.merges.push(MergeEvent {
                    kind: "split",
                    from_profile: p,
                    to_profile: id,
                    cause: c[0],
                });
            }
            for &m in c.iter() {
                profile_of[m as usize] = Some(id);
            }
        }
        // A profile absorbed piece by piece is recorded once, at its first link.
        let mut seen = std::collections::HashSet::new();
        for (young, old, cause) in absorbed {
            if !seen.insert(young) {
                continue;
            }
            resolution.merges.push(MergeEvent {
                kind: "merge",
                from_profile: young,
                to_profile: profile_of[cause as usize].unwrap_or(old),
                cause,
            });
        }
        resolution.profiles = components.len();
        resolution.profile_of = profile_of;
        resolution
    }
}

/// FNV-1a of an identifier's type and value: the same in every run (unlike
/// the hash maps' seeded hashers), for ordering ties.
fn stable_hash(node: &Node) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node
        .id_type
        .to_le_bytes()
        .iter()
        .chain(node.value.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The id of a profile founded by identifier `type:value`.
pub fn founding_id(id_type: &str, value: &str) -> Uuid {
    Uuid::new_v5(&PROFILE_NAMESPACE, format!("{id_type}:{value}").as_bytes())
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

/// Union-find with path halving, union by size and per-set counts of the
/// limited identifier types.
struct UnionFind {
    parent: Vec<NodeId>,
    size: Vec<u32>,
    counts: Vec<u32>,
    width: usize,
}

impl UnionFind {
    fn new(n: usize, width: usize) -> UnionFind {
        UnionFind {
            parent: (0..n as NodeId).collect(),
            size: vec![1; n],
            counts: vec![0; n * width],
            width,
        }
    }

    fn find(&mut self, mut x: NodeId) -> NodeId {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// The first limited type whose limit joining `a` and `b` would break.
    fn exceeds(&self, a: NodeId, b: NodeId, limits: &[(u16, u32)]) -> Option<usize> {
        (0..self.width).find(|&slot| {
            self.counts[a as usize * self.width + slot]
                + self.counts[b as usize * self.width + slot]
                > limits[slot].1
        })
    }

    fn union(&mut self, a: NodeId, b: NodeId) -> NodeId {
        let (big, small) = if self.size[a as usize] >= self.size[b as usize] {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[small as usize] = big;
        self.size[big as usize] += self.size[small as usize];
        for slot in 0..self.width {
            self.counts[big as usize * self.width + slot] +=
                self.counts[small as usize * self.width + slot];
        }
        big
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANON: u16 = 0;
    const USER: u16 = 1;
    const EMAIL: u16 = 2;

    fn graph() -> Graph {
        let t = |name: &str, priority, max| TypeRule {
            name: name.into(),
            priority,
            max_per_profile: max,
        };
        Graph::new(vec![
            t("anonymous_id", 4, None),
            t("user_id", 1, Some(1)),
            t("email", 2, None),
        ])
    }

    fn pair(g: &mut Graph, (ta, va): (u16, &str), (tb, vb): (u16, &str), at: i64) {
        let a = g.observe(ta, va, at);
        let b = g.observe(tb, vb, at);
        g.link(a, b, at);
    }

    fn resolve(g: &Graph, previous: &HashMap<NodeId, Uuid>) -> Resolution {
        g.resolve(
            |n| &*n.value == "test@test.com",
            |_, _| false,
            3,
            |i| previous.get(&i).copied(),
        )
    }

    fn id(g: &Graph, r: &Resolution, t: u16, v: &str) -> Option<Uuid> {
        r.profile_of[g.find(t, v).unwrap() as usize]
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
            Some(founding_id("user_id", "u1")),
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
            .filter_map(|i| first.profile_of[i as usize].map(|p| (i, p)))
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
                let r = g.resolve(|_| false, |_, _| false, u32::MAX, |_| None);
                let mut assignment: Vec<((u16, String), Uuid)> = g
                    .nodes
                    .iter()
                    .zip(&r.profile_of)
                    .map(|(n, p)| ((n.id_type, n.value.to_string()), p.unwrap()))
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
