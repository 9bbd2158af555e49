//! Resolving again only the part of the identity graph an incremental
//! refresh can change.
//!
//! The seeds are the identifiers of the new rows, those whose usability
//! changed (a value blocked or unblocked, a guard reached), the ends of
//! the links an administrator blocked and of the usable links between two
//! previous profiles (refused by a limit, so their refusals are listed
//! again). The part is every identifier linked to a seed by usable links,
//! with every member of the previous profiles of the identifiers whose
//! usability changed or whose link was blocked. Outside it nothing moved:
//! the same identifiers and links, first seen when they were, usable as
//! they were, so each component there is one previous profile whole and
//! keeps its id. [`touched_part`] finds the part; [`resolve_within`]
//! resolves it as a graph of its own, under the same rules and with every
//! previous id reserved, and keeps the previous assignment elsewhere: the
//! outcome of resolving the
//! whole graph (the incremental-equals-full tests check it), for a few
//! sequential passes over the links and nodes and a resolution of the part.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use super::facts::Facts;
use super::graph::{
    Edge, Graph, NONE, NodeId, Previous, Rejection, Resolution, Usable, in_two_halves,
    over_two_halves,
};
use super::interner::Interner;

/// Most of the graph a part may hold for resolving it alone to pay
/// (beyond, the whole graph is resolved).
const MAX_SHARE: usize = 2;

/// Most passes over the links to grow the part (each pass follows links in
/// their order, so a long chain of new links may need many; beyond, the
/// whole graph is resolved).
const MAX_PASSES: usize = 32;

/// The identifiers a partial resolution resolved again.
#[derive(Debug, Clone)]
pub struct Scope {
    /// In node order.
    pub nodes: Vec<NodeId>,
    member: Bits,
    /// [`Bits::word_ranks`] of `member`.
    ranks: Vec<u32>,
}

impl Scope {
    /// The scope of the nodes in `member`.
    fn of(member: Bits) -> Scope {
        Scope {
            nodes: member.ones().map(|i| i as NodeId).collect(),
            ranks: member.word_ranks(),
            member,
        }
    }

    /// Whether `node` was resolved again.
    pub fn contains(&self, node: NodeId) -> bool {
        self.member.get(node as usize)
    }

    /// The place of `node` in [`Scope::nodes`], if it is there.
    pub fn place(&self, node: NodeId) -> Option<usize> {
        self.contains(node)
            .then(|| self.member.rank(&self.ranks, node as usize) as usize)
    }

    /// Per key of the first `keys` of `facts`: whether it holds an
    /// identifier of the part (the halves on two threads).
    pub fn touching_keys(&self, facts: &Facts, keys: usize) -> Vec<bool> {
        let mut touching = vec![false; keys];
        in_two_halves(&mut touching, |part, from| {
            for (i, t) in part.iter_mut().enumerate() {
                *t = facts.key_nodes(from + i).iter().any(|&m| self.contains(m));
            }
        });
        touching
    }
}

/// A fixed-size set of small numbers, one bit each (in cache where a
/// `Vec<bool>` of millions of nodes is not).
#[derive(Debug, Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn get(&self, i: usize) -> bool {
        (self.0[i / 64] >> (i % 64)) & 1 == 1
    }

    /// Add `i`; whether it was new.
    fn set(&mut self, i: usize) -> bool {
        let (word, mask) = (&mut self.0[i / 64], 1u64 << (i % 64));
        let new = *word & mask == 0;
        *word |= mask;
        new
    }

    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            let mut rest = bits;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    w * 64 + bit
                })
            })
        })
    }

    /// How many members come before each word (for [`Bits::rank`]).
    fn word_ranks(&self) -> Vec<u32> {
        let mut before = 0u32;
        self.0
            .iter()
            .map(|w| {
                let r = before;
                before += w.count_ones();
                r
            })
            .collect()
    }

    /// How many members are below `i`, given [`Bits::word_ranks`].
    fn rank(&self, ranks: &[u32], i: usize) -> u32 {
        let below = self.0[i / 64] & ((1u64 << (i % 64)) - 1);
        ranks[i / 64] + below.count_ones()
    }
}

/// The part of `graph` that the identifiers `seeds` (those of the new
/// rows) can change, with the usability `usable` of the whole graph; every
/// other identifier keeps its profile of `previous` (the committed
/// assignment, of the first `before` nodes: the others are new). `None`
/// when the part is most of the graph: resolve it whole.
pub(super) fn touched_part(
    graph: &Graph,
    usable: &Usable,
    previous: &Previous,
    before: usize,
    seeds: impl Iterator<Item = NodeId>,
) -> Option<Scope> {
    grow_part(
        graph,
        usable,
        previous,
        before,
        seeds,
        graph.len() / MAX_SHARE,
    )
}

/// [`touched_part`], when the part holds at most `most` identifiers.
fn grow_part(
    graph: &Graph,
    usable: &Usable,
    previous: &Previous,
    before: usize,
    seeds: impl Iterator<Item = NodeId>,
    most: usize,
) -> Option<Scope> {
    let n = graph.len();
    let mut part = Bits::new(n);
    for s in seeds {
        part.set(s as usize);
    }
    // Identifiers new or whose usability changed, and the ends of blocked
    // links: with every member of their previous profiles (which may fall
    // apart without them).
    let mut broken = Bits::new(previous.ids().len());
    let mut any_broken = false;
    let mut seed_whole = |part: &mut Bits, i: usize| {
        part.set(i);
        let p = previous.numbers()[i];
        if p != NONE {
            broken.set(p as usize);
            any_broken = true;
        }
    };
    for (i, &was) in previous.numbers()[..before.min(n)].iter().enumerate() {
        if (was != NONE) != usable.node[i] {
            seed_whole(&mut part, i);
        }
    }
    for i in before..n {
        part.set(i);
    }
    for &(a, b) in &usable.cut {
        seed_whole(&mut part, a as usize);
        seed_whole(&mut part, b as usize);
    }
    if any_broken {
        for (i, &p) in previous.numbers().iter().enumerate() {
            if p != NONE && broken.get(p as usize) {
                part.set(i);
            }
        }
    }
    drop(broken);
    // Links refused by a limit, and the growth along usable links: the
    // first pass takes both, later ones only the growth, alternating
    // directions, until nothing is added. Each half of the links on a core
    // of its own, adding to one shared set: what one half adds, the other
    // may see at once or in the next pass (the part only grows, so it
    // ends the same).
    let words: Vec<AtomicU64> = part.0.into_iter().map(AtomicU64::new).collect();
    let has = |i: usize| (words[i / 64].load(Relaxed) >> (i % 64)) & 1 == 1;
    let add = |i: usize| {
        let mask = 1u64 << (i % 64);
        words[i / 64].fetch_or(mask, Relaxed) & mask == 0
    };
    let mut passes = 0;
    loop {
        let pass = |edges: &[Edge], _: usize| {
            let mut grew = false;
            let mut step = |&Edge { a, b, .. }: &Edge| {
                let (ia, ib) = (has(a as usize), has(b as usize));
                let refused = passes == 0
                    && !(ia && ib)
                    && previous.numbers()[a as usize] != previous.numbers()[b as usize];
                if (ia != ib || refused) && usable.link(a, b) {
                    grew |= add(a as usize) | add(b as usize);
                }
            };
            match passes % 2 {
                0 => edges.iter().for_each(&mut step),
                _ => edges.iter().rev().for_each(&mut step),
            }
            grew
        };
        let (low, high) = over_two_halves(&graph.edges, pass);
        passes += 1;
        if !(low || high) {
            break;
        }
        if passes == MAX_PASSES {
            return None;
        }
    }
    let part = Bits(words.into_iter().map(AtomicU64::into_inner).collect());
    let scope = Scope::of(part);
    (scope.nodes.len() <= most).then_some(scope)
}

/// Resolve the part `scope` of `graph` (from [`touched_part`]) as a graph
/// of its own; every identifier outside keeps its profile of `previous`.
pub(super) fn resolve_within(
    graph: &Graph,
    usable: &Usable,
    previous: &Arc<Previous>,
    scope: Scope,
) -> Resolution {
    let Scope {
        nodes,
        member: part,
        ranks,
    } = scope;

    // The part as a graph of its own, numbered in the same order.
    let local = |g: NodeId| part.rank(&ranks, g as usize);
    let mut sub = Graph {
        types: graph.types.clone(),
        nodes: Interner::unindexed(),
        first_seen: nodes
            .iter()
            .map(|&g| graph.first_seen[g as usize])
            .collect(),
        last_seen: nodes.iter().map(|&g| graph.last_seen[g as usize]).collect(),
        edges: Vec::new(),
        id_key: graph.id_key,
    };
    for &g in &nodes {
        sub.nodes.push(graph.id_type(g), graph.value(g));
    }
    sub.edges = graph
        .edges
        .iter()
        .filter(|e| part.get(e.a as usize) && part.get(e.b as usize))
        .map(|e| Edge {
            a: local(e.a),
            b: local(e.b),
            at: e.at,
        })
        .collect();
    let sub_usable = Usable {
        node: nodes.iter().map(|&g| usable.node[g as usize]).collect(),
        cut: usable
            .cut
            .iter()
            .filter(|&&(a, b)| part.get(a as usize) && part.get(b as usize))
            .map(|&(a, b)| (local(a), local(b)))
            .collect(),
        rejections: Vec::new(),
    };
    let mut sub_previous = Previous::new(nodes.len());
    for (l, &g) in nodes.iter().enumerate() {
        if let Some(id) = previous.of(g) {
            sub_previous.set(l as NodeId, id);
        }
    }
    let resolved = sub.resolve_usable(&sub_usable, &sub_previous, Some(previous), false);
    drop((sub, sub_usable, sub_previous));

    // Back to the graph's numbers: the part's profiles, in the part's
    // order; every other identifier's is its previous one.
    let global = |l: NodeId| nodes[l as usize];
    let mut kept_ids = Bits::new(previous.ids().len());
    let mut kept = 0;
    for (i, &p) in previous.numbers().iter().enumerate() {
        if p != NONE && !part.get(i) && kept_ids.set(p as usize) {
            kept += 1;
        }
    }
    let mut rejections = usable.rejections.clone();
    rejections.extend(resolved.rejections.iter().map(|r| match *r {
        Rejection::LimitExceeded { a, b, limited_type } => Rejection::LimitExceeded {
            a: global(a),
            b: global(b),
            limited_type,
        },
        ref other => other.clone(),
    }));
    let mut merges = resolved.merges;
    for m in &mut merges {
        m.cause = global(m.cause);
    }
    Resolution {
        assigned: resolved.assigned,
        rejections,
        merges,
        profiles: resolved.profiles + kept,
        new_profiles: resolved.new_profiles,
        members: resolved.members.iter().map(|&l| global(l)).collect(),
        starts: resolved.starts,
        component_ids: resolved.component_ids,
        union_find_ms: resolved.union_find_ms,
        partial: Some((
            Scope {
                nodes,
                member: part,
                ranks,
            },
            previous.clone(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::common::HashSet;
    use rand::{Rng, SeedableRng};
    use uuid::Uuid;

    use super::*;
    use crate::identity::graph::tests::graph;

    /// Link random identifiers of `values` values per type; the nodes of
    /// the links added.
    fn add_links(
        g: &mut Graph,
        rng: &mut rand_chacha::ChaCha8Rng,
        links: usize,
        values: u32,
    ) -> Vec<NodeId> {
        let mut touched = Vec::new();
        for _ in 0..links {
            let at = rng.random_range(0..1_000);
            let mut end = |rng: &mut rand_chacha::ChaCha8Rng| {
                let t = rng.random_range(0..3u16);
                let v = format!("v{}", rng.random_range(0..values));
                g.observe(t, &v, at)
            };
            let (a, b) = (end(rng), end(rng));
            touched.extend([a, b]);
            g.link(a, b, at);
        }
        g.settle_edges();
        touched
    }

    /// On random graphs resolved once, then grown by new links (and new
    /// identifiers), with a value blocked or a link cut in between:
    /// resolving the touched part gives exactly what resolving the whole
    /// graph gives.
    #[test]
    fn resolving_the_touched_part_equals_resolving_everything() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (mut partial, mut smaller) = (0, 0);
        for case in 0..400 {
            let values = rng.random_range(4..80);
            let mut g = graph();
            let links = rng.random_range(1..80);
            add_links(&mut g, &mut rng, links, values);
            let first = g.usable(|n| g.value(n) == "v1", |_, _| false, 4);
            let one = g.resolve_allowed(&first, &Previous::new(g.len()));
            let before = one.assigned.clone();

            let links = rng.random_range(0..6);
            let seeds = add_links(&mut g, &mut rng, links, values + 3);
            let blocked = format!("v{}", rng.random_range(1..4));
            let cut_value = format!("v{}", rng.random_range(0..values));
            let cuts = case % 5 == 0;
            let usable = g.usable(
                |n| g.value(n) == blocked,
                |a, b| cuts && (g.value(a) == cut_value || g.value(b) == cut_value),
                4,
            );
            let mut previous = Previous::from_assignment(&before);
            previous.extend_to(g.len());
            let previous = Arc::new(previous);
            let whole = g.resolve_allowed(&usable, &previous);
            let Some(scope) = grow_part(
                &g,
                &usable,
                &previous,
                before.len(),
                seeds.into_iter(),
                g.len(),
            ) else {
                continue;
            };
            let part = resolve_within(&g, &usable, &previous, scope);
            partial += 1;
            let scope = part.scope().expect("a partial resolution");
            smaller += usize::from(scope.nodes.len() < g.len());
            let ids = |r: &Resolution| (0..g.len() as NodeId).map(|n| r.profile(n)).collect();
            let (part_ids, whole_ids): (Vec<_>, Vec<_>) = (ids(&part), ids(&whole));
            assert_eq!(part_ids, whole_ids, "case {case}: ids");
            assert_eq!(part.rejections, whole.rejections, "case {case}: refusals");
            assert_eq!(part.merges, whole.merges, "case {case}: history");
            assert_eq!(part.profiles, whole.profiles, "case {case}: profiles");
            assert_eq!(part.new_profiles, whole.new_profiles, "case {case}");
            // Its components are the whole resolution's profiles of the
            // part, and they list the part's identifiers that have one.
            let whole_components: HashSet<(Uuid, Vec<NodeId>)> =
                whole.components().map(|(id, m)| (id, sorted(m))).collect();
            let mut listed = 0;
            for (id, members) in part.components() {
                assert!(members.iter().all(|&m| scope.contains(m)));
                assert!(
                    whole_components.contains(&(id, sorted(members))),
                    "case {case}"
                );
                listed += members.len();
            }
            let with_profile = scope
                .nodes
                .iter()
                .filter(|&&m| whole.profile(m).is_some())
                .count();
            assert_eq!(listed, with_profile, "case {case}");
        }
        assert!(
            partial > 300,
            "most cases grow the part to a fixed point ({partial})"
        );
        assert!(smaller > 150, "many parts leave profiles out ({smaller})");
    }

    fn sorted(members: &[NodeId]) -> Vec<NodeId> {
        let mut m = members.to_vec();
        m.sort_unstable();
        m
    }

    /// A key touches the part when it holds one of its identifiers,
    /// whichever half of the keys (and thread) it is in.
    #[test]
    fn keys_touching_the_part_are_those_holding_one_of_its_identifiers() {
        let keys = 70_000u32; // two halves on two threads
        let mut facts = Facts::new();
        for k in 0..keys {
            facts.push_key(&[k, k + 1], crate::identity::facts::KeyStats::default());
        }
        let mut member = Bits::new(keys as usize + 1);
        for i in [0, 40_000, 69_999] {
            member.set(i);
        }
        let scope = Scope::of(member);
        let touching = scope.touching_keys(&facts, keys as usize);
        let found: Vec<usize> = (0..touching.len()).filter(|&k| touching[k]).collect();
        assert_eq!(found, vec![0, 39_999, 40_000, 69_998, 69_999]);
        // Members are found at their place in the part, others nowhere.
        let places: Vec<_> = [0, 1, 40_000, 40_001, 69_999]
            .map(|n| scope.place(n))
            .to_vec();
        assert_eq!(places, vec![Some(0), None, Some(1), None, Some(2)]);
    }

    #[test]
    fn bits_count_and_rank_their_members() {
        let mut bits = Bits::new(200);
        for i in [0, 3, 63, 64, 130, 199] {
            assert!(bits.set(i));
        }
        assert!(!bits.set(64), "already a member");
        assert_eq!(
            bits.ones().collect::<Vec<_>>(),
            vec![0, 3, 63, 64, 130, 199]
        );
        let ranks = bits.word_ranks();
        let ranked: Vec<u32> = bits.ones().map(|i| bits.rank(&ranks, i)).collect();
        assert_eq!(ranked, vec![0, 1, 2, 3, 4, 5]);
        assert!(bits.get(130) && !bits.get(131));
    }
}
