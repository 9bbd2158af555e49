//! Resolution proper: from the identifiers and links a [`Usable`] allows
//! and the previous assignment, the profiles. It runs in phases, each a
//! function of its own: the ages of nodes and previous profiles
//! ([`Ages`]); one unordered union-find pass over every usable link
//! ([`Graph::loose`]); the components where the order of links matters
//! joined again link by link, strongest and oldest first
//! ([`Graph::ordered_links`], [`Graph::join_in_order`]); the members
//! grouped by component ([`Components`]); each component named — a
//! surviving previous id or a founding id — with the splits
//! ([`Graph::name_profiles`]) and merges ([`record_merges`]) recorded.

use std::time::Instant;

use datafusion::common::HashSet;
use uuid::Uuid;

use super::{
    Edge, Graph, MergeEvent, NONE, NodeId, Previous, Rejection, Resolution, Usable, founding_id,
};

/// A link to join in order: its strength (the priority of its stronger
/// end), first sighting, the two ends' stable hashes (lower first) and
/// the two ends.
type Link = (u32, i64, u64, u64, NodeId, NodeId);

/// A previous profile absorbed by another: (absorbed, absorbing, the
/// identifier whose link caused it).
type Absorbed = (u32, u32, NodeId);

impl Graph {
    /// Resolve profiles with the identifiers and links `allowed` allows;
    /// the new ids avoid `previous`'s and those `reserved` holds. The
    /// rejections are only the links refused by a limit.
    pub(in crate::identity) fn resolve_usable(
        &self,
        allowed: &Usable,
        previous: &Previous,
        reserved: Option<&Previous>,
        order_everything: bool,
    ) -> Resolution {
        assert_eq!(
            previous.of_node.len(),
            self.nodes.len(),
            "the previous assignment is sized for this graph"
        );
        let limits: Vec<(u16, u32)> = self
            .types
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.max_per_profile.map(|m| (i as u16, m)))
            .collect();
        let ages = Ages::new(self, previous, &allowed.node);
        let mut resolution = Resolution::default();
        let union_find = Instant::now();
        let mut joined = self.loose(allowed, previous, &limits, order_everything);
        let links = self.ordered_links(allowed, &joined);
        let absorbed = self.join_in_order(
            &mut joined,
            links,
            &limits,
            previous,
            &ages,
            &mut resolution.rejections,
        );
        resolution.union_find_ms = union_find.elapsed().as_millis() as u64;
        let parts = Components::of(joined, &allowed.node, &ages, previous);
        let (profile_of, component_ids) =
            self.name_profiles(&parts, previous, reserved, &ages, &mut resolution);
        record_merges(&mut resolution, absorbed, &profile_of, previous);
        resolution.profiles = parts.len();
        resolution.assigned = profile_of;
        resolution.members = parts.members;
        resolution.starts = parts.starts;
        resolution.component_ids = component_ids;
        resolution
    }

    /// 1. Components of all usable links, in any order. Where no limit
    ///    can be broken and at most one previous profile is present, the
    ///    order of the links cannot change the outcome: that component is
    ///    final. Only the others (all with `order_everything`) are marked
    ///    to be joined again, link by link in order.
    fn loose(
        &self,
        allowed: &Usable,
        previous: &Previous,
        limits: &[(u16, u32)],
        order_everything: bool,
    ) -> Joined {
        let n = self.nodes.len();
        let types = self.nodes.kinds();
        let usable = &allowed.node;
        let mut sets = UnionFind::new(n, limits, |i| types[i]);
        for &Edge { a, b, .. } in &self.edges {
            if allowed.link(a, b) {
                let (ra, rb) = (sets.find(a), sets.find(b));
                if ra != rb {
                    sets.union(ra, rb);
                }
            }
        }
        let loose_root: Vec<NodeId> = (0..n as NodeId).map(|i| sets.find(i)).collect();
        let mut ordered = vec![false; n];
        for r in 0..n {
            if loose_root[r] == r as NodeId && sets.exceeds_alone(r as NodeId, limits) {
                ordered[r] = true;
            }
        }
        let mut first_prev = vec![NONE; n];
        for (i, &p) in previous.of_node.iter().enumerate() {
            if p != NONE && usable[i] {
                let r = loose_root[i] as usize;
                if first_prev[r] == NONE {
                    first_prev[r] = p;
                } else if first_prev[r] != p {
                    ordered[r] = true;
                }
            }
        }
        drop(first_prev);
        if order_everything {
            ordered.iter_mut().for_each(|o| *o = true);
        }
        Joined {
            sets,
            loose_root,
            ordered,
        }
    }

    /// 2. The links of the components joined in order, strongest and
    ///    oldest first. Ties are broken by the two identifiers themselves
    ///    (type and value, never interning order), so arrival order is
    ///    irrelevant: first by a stable hash of each end, integers being
    ///    quick to sort, then by the values.
    fn ordered_links(&self, allowed: &Usable, joined: &Joined) -> Vec<Link> {
        if !joined.any_ordered() {
            return Vec::new();
        }
        let types = self.nodes.kinds();
        let mut links: Vec<Link> = self
            .edges
            .iter()
            .filter(|e| joined.is_ordered(e.a) && allowed.link(e.a, e.b))
            .map(|&Edge { a, b, at }| {
                let rank = self.types[types[a as usize] as usize]
                    .priority
                    .max(self.types[types[b as usize] as usize].priority);
                let (ha, hb) = (
                    stable_hash(types[a as usize], self.value(a)),
                    stable_hash(types[b as usize], self.value(b)),
                );
                (rank, at, ha.min(hb), ha.max(hb), a, b)
            })
            .collect();
        let ends = |a: NodeId, b: NodeId| {
            let (ka, kb) = (
                (types[a as usize], self.value(a)),
                (types[b as usize], self.value(b)),
            );
            if ka <= kb { (ka, kb) } else { (kb, ka) }
        };
        links.sort_unstable_by(|x, y| {
            (x.0, x.1, x.2, x.3)
                .cmp(&(y.0, y.1, y.2, y.3))
                .then_with(|| ends(x.4, x.5).cmp(&ends(y.4, y.5)))
        });
        links
    }

    /// 3. The ordered components joined again, `links` in their order: a
    ///    link that would break a limit is refused (into `rejections`);
    ///    where two previous profiles meet, the older absorbs the younger.
    fn join_in_order(
        &self,
        joined: &mut Joined,
        links: Vec<Link>,
        limits: &[(u16, u32)],
        previous: &Previous,
        ages: &Ages,
        rejections: &mut Vec<Rejection>,
    ) -> Vec<Absorbed> {
        let types = self.nodes.kinds();
        if joined.any_ordered() {
            for i in 0..self.nodes.len() as NodeId {
                if joined.is_ordered(i) {
                    joined.sets.reset(i, limits, types[i as usize]);
                }
            }
        }
        let sets = &mut joined.sets;
        let mut root_prev: Vec<u32> = previous.of_node.clone();
        let mut absorbed = Vec::new();
        for (_, _, _, _, a, b) in links {
            let (ra, rb) = (sets.find(a), sets.find(b));
            if ra == rb {
                continue;
            }
            if let Some(slot) = sets.exceeds(ra, rb, limits) {
                rejections.push(Rejection::LimitExceeded {
                    a,
                    b,
                    limited_type: limits[slot].0,
                });
                continue;
            }
            let (pa, pb) = (root_prev[ra as usize], root_prev[rb as usize]);
            let survivor = if pa != NONE && pb != NONE && pa != pb {
                let (old, young) = if ages.older(pa, pb) {
                    (pa, pb)
                } else {
                    (pb, pa)
                };
                absorbed.push((young, old, if young == pb { b } else { a }));
                old
            } else if pa != NONE {
                pa
            } else {
                pb
            };
            let root = sets.union(ra, rb);
            root_prev[root as usize] = survivor;
        }
        absorbed
    }

    /// 4. Each component's profile id: the oldest previous id it claims
    ///    survives, and the others it holds were split off their profiles
    ///    (recorded in `resolution`); a component claiming none is a new
    ///    profile. Returns each node's profile and each component's id.
    fn name_profiles(
        &self,
        parts: &Components,
        previous: &Previous,
        reserved: Option<&Previous>,
        ages: &Ages,
        resolution: &mut Resolution,
    ) -> (Vec<Option<Uuid>>, Vec<Uuid>) {
        let mut profile_of = vec![None; self.nodes.len()];
        // Ids in use: never given to a second profile. The previous ones
        // are found in `previous`'s own index; `taken` holds the new ones.
        let mut taken: HashSet<Uuid> = HashSet::new();
        let (mut mine, mut split_from) = (Vec::new(), Vec::new());
        let mut component_ids = vec![Uuid::nil(); parts.len()];
        for ci in 0..parts.len() {
            let (c, founder, component) = parts.nth(ci);
            mine.clear();
            split_from.clear();
            for &m in c {
                let p = previous.of_node[m as usize];
                if p == NONE {
                } else if parts.claimed[p as usize] == ci as u32 {
                    mine.push(p);
                } else {
                    split_from.push(previous.ids[p as usize]);
                }
            }
            mine.sort_unstable_by(|&x, &y| {
                ages.previous[x as usize]
                    .cmp(&ages.previous[y as usize])
                    .then(previous.ids[x as usize].cmp(&previous.ids[y as usize]))
            });
            let id = match mine.first() {
                Some(&p) => previous.ids[p as usize],
                None => {
                    resolution.new_profiles += 1;
                    let id = self.fresh_id(founder, |id| {
                        previous.holds(id)
                            || taken.contains(id)
                            || reserved.is_some_and(|r| r.holds(id))
                    });
                    taken.insert(id);
                    id
                }
            };
            split_from.sort_unstable();
            split_from.dedup();
            for &p in &split_from {
                resolution.merges.push(MergeEvent {
                    kind: "split",
                    from_profile: p,
                    to_profile: id,
                    cause: founder,
                });
            }
            for &m in c {
                profile_of[m as usize] = Some(id);
            }
            component_ids[component] = id;
        }
        (profile_of, component_ids)
    }

    /// A new profile's id: its founder's founding id, unless a profile
    /// had it already (its founder met older data and now sits in another
    /// part), then that of `value#1`, `value#2`, … until one is free.
    fn fresh_id(&self, founder: NodeId, in_use: impl Fn(&Uuid) -> bool) -> Uuid {
        let name = &self.types[self.nodes.kinds()[founder as usize] as usize].name;
        let value = self.value(founder);
        let mut id = founding_id(&self.id_key, name, value);
        let mut n = 1;
        while in_use(&id) {
            id = founding_id(&self.id_key, name, &format!("{value}#{n}"));
            n += 1;
        }
        id
    }
}

/// 5. The merges: a profile absorbed piece by piece is recorded once, at
///    its first link, as merged into the profile its cause ended in.
fn record_merges(
    resolution: &mut Resolution,
    absorbed: Vec<Absorbed>,
    profile_of: &[Option<Uuid>],
    previous: &Previous,
) {
    let mut seen = std::collections::HashSet::new();
    for (young, old, cause) in absorbed {
        if !seen.insert(young) {
            continue;
        }
        resolution.merges.push(MergeEvent {
            kind: "merge",
            from_profile: previous.ids[young as usize],
            to_profile: profile_of[cause as usize].unwrap_or(previous.ids[old as usize]),
            cause,
        });
    }
}

/// Every node's place in "which is older" and each previous profile's age.
struct Ages {
    /// Per node: its rank by age (0: the oldest).
    rank: Vec<u32>,
    /// Per previous profile: the rank of its oldest usable identifier,
    /// plus one (0: it has none left).
    previous: Vec<u32>,
}

impl Ages {
    fn new(graph: &Graph, previous: &Previous, usable: &[bool]) -> Ages {
        let rank = graph.age_ranks();
        let mut of_previous: Vec<u32> = vec![0; previous.ids.len()];
        for (i, &p) in previous.of_node.iter().enumerate() {
            if p != NONE && usable[i] {
                let r = &mut of_previous[p as usize];
                if *r == 0 || rank[i] + 1 < *r {
                    *r = rank[i] + 1;
                }
            }
        }
        Ages {
            rank,
            previous: of_previous,
        }
    }

    /// Whether previous profile `x` is at least as old as `y`.
    fn older(&self, x: u32, y: u32) -> bool {
        self.previous[x as usize] <= self.previous[y as usize]
    }
}

/// The union-find after the unordered pass, and (once joined in order)
/// after the ordered one.
struct Joined {
    sets: UnionFind,
    /// Per node: its root in the unordered pass.
    loose_root: Vec<NodeId>,
    /// Per unordered root: whether its component is joined in order.
    ordered: Vec<bool>,
}

impl Joined {
    fn any_ordered(&self) -> bool {
        self.ordered.contains(&true)
    }

    fn is_ordered(&self, i: NodeId) -> bool {
        self.ordered[self.loose_root[i as usize] as usize]
    }

    /// Node `i`'s final root.
    fn root(&mut self, i: NodeId) -> NodeId {
        match self.is_ordered(i) {
            true => self.sets.find(i),
            false => self.loose_root[i as usize],
        }
    }
}

/// The components: members grouped by root (a counting sort), each led by
/// its founder (its oldest member), the components oldest founder first.
struct Components {
    members: Vec<NodeId>,
    starts: Vec<u32>,
    founder: Vec<NodeId>,
    /// (founder's rank, component), oldest founder first.
    order: Vec<(u32, u32)>,
    /// Per previous profile: the place in `order` of the component
    /// holding its oldest identifier (`NONE`: no identifier left). A
    /// previous id goes to that component; other parts of a split get an
    /// id of their own.
    claimed: Vec<u32>,
}

impl Components {
    fn of(mut joined: Joined, usable: &[bool], ages: &Ages, previous: &Previous) -> Components {
        let n = usable.len();
        let mut component_of_root = vec![NONE; n];
        let mut sizes: Vec<u32> = Vec::new();
        let mut node_component = vec![NONE; n];
        for i in 0..n as NodeId {
            if !usable[i as usize] {
                continue;
            }
            let root = joined.root(i);
            let c = &mut component_of_root[root as usize];
            if *c == NONE {
                *c = sizes.len() as u32;
                sizes.push(0);
            }
            sizes[*c as usize] += 1;
            node_component[i as usize] = *c;
        }
        drop((component_of_root, joined));
        let rank = &ages.rank;
        let (members, starts, founder) = group(&node_component, &sizes, rank);
        drop(sizes);
        let mut order: Vec<(u32, u32)> = founder
            .iter()
            .enumerate()
            .map(|(c, &f)| (rank[f as usize], c as u32))
            .collect();
        order.sort_unstable();
        let mut place = vec![0u32; order.len()];
        for (ci, &(_, c)) in order.iter().enumerate() {
            place[c as usize] = ci as u32;
        }
        let mut claimed: Vec<u32> = vec![NONE; previous.ids.len()];
        for (i, &p) in previous.of_node.iter().enumerate() {
            if p != NONE && usable[i] && ages.previous[p as usize] == rank[i] + 1 {
                claimed[p as usize] = place[node_component[i] as usize];
            }
        }
        Components {
            members,
            starts,
            founder,
            order,
            claimed,
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    /// The `ci`th component, oldest first: its members, its founder and
    /// its number among the components.
    fn nth(&self, ci: usize) -> (&[NodeId], NodeId, usize) {
        let c = self.order[ci].1 as usize;
        let members = &self.members[self.starts[c] as usize..self.starts[c + 1] as usize];
        (members, self.founder[c], c)
    }
}

/// Members of each component, by a counting sort of `node_component`
/// (the component of each node, `NONE` for none; `sizes` of each):
/// `members[starts[c]..starts[c + 1]]`, and each component's founder
/// (its oldest member by `rank`).
fn group(
    node_component: &[u32],
    sizes: &[u32],
    rank: &[u32],
) -> (Vec<NodeId>, Vec<u32>, Vec<NodeId>) {
    let mut starts: Vec<u32> = Vec::with_capacity(sizes.len() + 1);
    let mut at = 0u32;
    for s in sizes {
        starts.push(at);
        at += s;
    }
    starts.push(at);
    let mut fill = starts.clone();
    let mut members = vec![0 as NodeId; at as usize];
    let mut founder: Vec<NodeId> = vec![NONE; sizes.len()];
    for (i, &c) in node_component.iter().enumerate() {
        if c == NONE {
            continue;
        }
        members[fill[c as usize] as usize] = i as NodeId;
        fill[c as usize] += 1;
        let f = &mut founder[c as usize];
        if *f == NONE || rank[i] < rank[*f as usize] {
            *f = i as NodeId;
        }
    }
    (members, starts, founder)
}

/// FNV-1a of an identifier's type and value: the same in every run (unlike
/// the hash maps' seeded hashers), for ordering ties.
fn stable_hash(id_type: u16, value: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id_type.to_le_bytes().iter().chain(value.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
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
    /// `n` singletons; `type_of(i)` is node `i`'s identifier type.
    fn new(n: usize, limits: &[(u16, u32)], type_of: impl Fn(usize) -> u16) -> UnionFind {
        let mut sets = UnionFind {
            parent: (0..n as NodeId).collect(),
            size: vec![1; n],
            counts: vec![0; n * limits.len()],
            width: limits.len(),
        };
        for i in 0..n {
            sets.count_own(i as NodeId, limits, type_of(i));
        }
        sets
    }

    fn count_own(&mut self, i: NodeId, limits: &[(u16, u32)], id_type: u16) {
        for (slot, &(t, _)) in limits.iter().enumerate() {
            self.counts[i as usize * self.width + slot] = u32::from(t == id_type);
        }
    }

    /// Make `i` a singleton again (every other member of its set must be
    /// reset too before the set is used).
    fn reset(&mut self, i: NodeId, limits: &[(u16, u32)], id_type: u16) {
        self.parent[i as usize] = i;
        self.size[i as usize] = 1;
        self.count_own(i, limits, id_type);
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

    /// Whether the set rooted at `a` holds more of a limited type than its
    /// limit (so joining it in another order could have refused a link).
    fn exceeds_alone(&self, a: NodeId, limits: &[(u16, u32)]) -> bool {
        (0..self.width).any(|slot| self.counts[a as usize * self.width + slot] > limits[slot].1)
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
