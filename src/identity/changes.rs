//! What an incremental refresh changed, compared with the committed
//! version: which profiles must be written again, which rows go away, and
//! which stored facts must be read to rebuild them. Only those are written,
//! as a delta layer of each view (see [`crate::lake::manifest::Delta`]).
//!
//! A profile is written again when one of its identifiers is new, changed
//! profile or was seen again (its times moved), when a row key's facts now
//! go to it and did not before, when it lost an identifier or a key, and
//! when it comes back into view. A profile id that no longer exists, or
//! whose anonymous-only profile has now been idle too long, is removed.

use datafusion::common::HashSet;
use uuid::Uuid;

use super::config::IdentityConfig;
use super::facts::Facts;
use super::graph::{Graph, NONE as NO_PROFILE, NodeId, Previous, Resolution, in_two_halves};

/// No component.
const NONE: u32 = u32::MAX;

/// The committed version, as far as the comparison needs it.
pub(super) struct Before<'a> {
    /// Identifiers and keys below these numbers were in it.
    pub nodes: usize,
    pub keys: usize,
    /// Its cut-off for idle anonymous-only profiles (microseconds).
    pub cutoff: i64,
    /// Each of its identifiers' profile id, numbered.
    pub previous: &'a Previous,
    /// Per stored key, after a partial resolution, whether it holds an
    /// identifier resolved again (if known; else it is looked up).
    pub touching: Option<&'a [bool]>,
}

/// Which profiles are in view: all but anonymous-only ones last seen
/// before the cut-off.
#[derive(Debug, Clone, Copy)]
pub(super) struct Visibility {
    /// The `anonymous_id` type, if configured.
    pub anonymous: Option<u16>,
    pub cutoff: i64,
}

impl Visibility {
    /// The visibility rule of `config` for the anonymous-only profiles
    /// idle since before `cutoff`.
    pub(super) fn new(config: &IdentityConfig, cutoff: i64) -> Visibility {
        Visibility {
            anonymous: config
                .types
                .iter()
                .position(|t| t.name == "anonymous_id")
                .map(|i| i as u16),
            cutoff,
        }
    }

    /// Whether a profile of these members is in view.
    pub(super) fn shows(&self, graph: &Graph, members: &[NodeId]) -> bool {
        members
            .iter()
            .any(|&n| Some(graph.id_type(n)) != self.anonymous)
            || members
                .iter()
                .map(|&n| graph.last_seen[n as usize])
                .max()
                .is_some_and(|last| last >= self.cutoff)
    }
}

/// What to write for an incremental refresh.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Per profile of [`Resolution::components`]: its row is written.
    pub rewrite: Vec<bool>,
    /// Profile ids whose rows go away.
    pub removed_profiles: Vec<Uuid>,
    /// Identifiers whose link row is written (they have a profile).
    pub links: Vec<NodeId>,
    /// Identifiers whose link row goes away (no profile any more).
    pub unlinked: Vec<NodeId>,
    /// Identifiers whose profile changed, with the new one.
    pub assignment: Vec<(NodeId, Option<Uuid>)>,
    /// Stored keys whose cells must be read: those of rewritten profiles.
    pub wanted_keys: Vec<bool>,
    /// Per key (stored, then new): the profile its facts go to, by place
    /// in [`Resolution::components`], or `u32::MAX` for none.
    pub owners: Vec<u32>,
}

impl Changes {
    /// How many profiles are written again.
    pub(super) fn rewritten(&self) -> usize {
        self.rewrite.iter().filter(|&&r| r).count()
    }
}

impl Before<'_> {
    /// Identifier `m`'s profile in the committed version, if it was in it.
    fn was(&self, m: NodeId) -> Option<Uuid> {
        match (m as usize) < self.nodes {
            true => self.previous.of(m),
            false => None,
        }
    }
}

/// Compare the resolution of this refresh with the committed version.
/// `facts` holds the stored keys first and this refresh's new keys after.
pub(super) fn compare(
    graph: &Graph,
    facts: &Facts,
    resolution: &Resolution,
    before: &Before<'_>,
    visibility: Visibility,
) -> Changes {
    let mut component = vec![NONE; graph.len()];
    let mut ids = Vec::with_capacity(resolution.profiles);
    for (c, (id, members)) in resolution.components().enumerate() {
        for &m in members {
            component[m as usize] = c as u32;
        }
        ids.push(id);
    }
    let mut changes = Changes {
        rewrite: vec![false; ids.len()],
        ..Changes::default()
    };
    let mut touched_before =
        identifiers_changed(graph, facts, resolution, before, &component, &mut changes);
    let owners = keys_changed(
        facts,
        resolution,
        before,
        &component,
        &mut changes,
        &mut touched_before,
    );
    // A previous profile that still exists is written again; one that
    // does not is removed.
    for (c, id) in ids.iter().enumerate() {
        if touched_before.remove(id) {
            changes.rewrite[c] = true;
        }
    }
    changes.removed_profiles.extend(touched_before);
    visibility_changed(graph, resolution, before, visibility, &mut changes);
    changes.removed_profiles.sort_unstable();
    changes.removed_profiles.dedup();
    changes.wanted_keys = owners[..before.keys]
        .iter()
        .map(|&c| c != NONE && changes.rewrite[c as usize])
        .collect();
    changes.owners = owners;
    changes
}

/// The identifiers whose profile changed or that were seen again: their
/// link rows (and profiles) are written, or their link rows go away.
/// Returns the previous profiles that lost or changed something.
fn identifiers_changed(
    graph: &Graph,
    facts: &Facts,
    resolution: &Resolution,
    before: &Before<'_>,
    component: &[u32],
    changes: &mut Changes,
) -> HashSet<Uuid> {
    let n = graph.len();
    // Identifiers seen in new rows: their times moved.
    let mut seen_again = vec![false; n];
    for k in before.keys..facts.len() {
        for &m in facts.key_nodes(k) {
            seen_again[m as usize] = true;
        }
    }
    // Previous profiles that lost or changed something: only identifiers
    // resolved again can have (after a partial resolution, the others
    // kept their profile and were not seen again).
    let every: Vec<NodeId>;
    let resolved: &[NodeId] = match resolution.scope() {
        Some(s) => &s.nodes,
        None => {
            every = (0..n as NodeId).collect();
            &every
        }
    };
    let mut touched_before: HashSet<Uuid> = HashSet::new();
    for &m in resolved {
        let (now, then) = (resolution.profile(m), before.was(m));
        if now != then {
            changes.assignment.push((m, now));
            if let Some(then) = then {
                touched_before.insert(then);
            }
        }
        match now {
            Some(_) if now != then || seen_again[m as usize] => {
                changes.links.push(m);
                changes.rewrite[component[m as usize] as usize] = true;
            }
            None if then.is_some() => changes.unlinked.push(m),
            _ => {}
        }
    }
    touched_before
}

/// Each key's owner: its facts go to the profile of its strongest
/// identifier that has one (by place in [`Resolution::components`]); a
/// stored key whose profile changed marks both the new profile (to write)
/// and the old one (into `touched_before`).
fn keys_changed(
    facts: &Facts,
    resolution: &Resolution,
    before: &Before<'_>,
    component: &[u32],
    changes: &mut Changes,
    touched_before: &mut HashSet<Uuid>,
) -> Vec<u32> {
    let scope = resolution.scope();
    let owner = |k: usize| {
        facts
            .key_nodes(k)
            .iter()
            .copied()
            .find(|&m| resolution.profile(m).is_some())
    };
    let touches = |k: usize| match (scope, before.touching) {
        (None, _) => true,
        (Some(_), Some(t)) if k < t.len() => t[k],
        (Some(s), _) => facts.key_nodes(k).iter().any(|&m| s.contains(m)),
    };
    // Each half of the keys on a core of its own (a handful of cache
    // misses per key touching the part): the owners in place, and the
    // profiles each half saw change.
    let mut owners = vec![NONE; facts.len()];
    let (low, high) = in_two_halves(&mut owners, |owners, from| {
        let (mut rewrite, mut lost) = (Vec::new(), Vec::new());
        for (i, o) in owners.iter_mut().enumerate() {
            let k = from + i;
            if !touches(k) {
                // Its identifiers kept their profiles: so did its facts.
                continue;
            }
            let now = owner(k);
            if let Some(m) = now {
                *o = component[m as usize];
            }
            if k >= before.keys {
                // Its identifiers were seen again: their profiles are marked.
                continue;
            }
            let then = facts.key_nodes(k).iter().find_map(|&m| before.was(m));
            let now_id = now.and_then(|m| resolution.profile(m));
            if now_id != then {
                rewrite.extend(now.map(|m| component[m as usize]));
                lost.extend(then);
            }
        }
        (rewrite, lost)
    });
    for (rewrite, lost) in [low, high] {
        for c in rewrite {
            changes.rewrite[c as usize] = true;
        }
        touched_before.extend(lost);
    }
    owners
}

/// Profiles that left or came into view: in view now and before, their
/// members and times are unchanged unless they are written again.
fn visibility_changed(
    graph: &Graph,
    resolution: &Resolution,
    before: &Before<'_>,
    visibility: Visibility,
    changes: &mut Changes,
) {
    let then_visibility = Visibility {
        cutoff: before.cutoff,
        ..visibility
    };
    for (c, (id, members)) in resolution.components().enumerate() {
        let shown = visibility.shows(graph, members);
        if changes.rewrite[c] {
            if !shown {
                changes.rewrite[c] = false;
                changes.removed_profiles.push(id);
            }
            continue;
        }
        match (then_visibility.shows(graph, members), shown) {
            (true, false) => changes.removed_profiles.push(id),
            (false, true) => changes.rewrite[c] = true,
            _ => {}
        }
    }
    if resolution.scope().is_some() && then_visibility.cutoff != visibility.cutoff {
        idle_since(graph, resolution, before, then_visibility, visibility)
            .for_each(|id| changes.removed_profiles.push(id));
    }
}

/// The profiles a partial resolution kept whole that were in view at
/// `then` and are not `now` (anonymous-only, idle since between the two
/// cut-offs).
fn idle_since<'a>(
    graph: &Graph,
    resolution: &Resolution,
    before: &'a Before<'_>,
    then: Visibility,
    now: Visibility,
) -> impl Iterator<Item = Uuid> + 'a {
    let previous = before.previous;
    let ids = previous.ids();
    // Per kept profile: whether it holds a known identifier, and when its
    // identifiers were last seen.
    let (mut known, mut last) = (vec![false; ids.len()], vec![i64::MIN; ids.len()]);
    for (m, &p) in previous.numbers().iter().enumerate() {
        if p == NO_PROFILE || resolution.scope().is_some_and(|s| s.contains(m as NodeId)) {
            continue;
        }
        known[p as usize] |= Some(graph.id_type(m as NodeId)) != now.anonymous;
        last[p as usize] = last[p as usize].max(graph.last_seen[m]);
    }
    ids.iter().enumerate().filter_map(move |(p, &id)| {
        let anonymous_only = !known[p] && last[p] != i64::MIN;
        (anonymous_only && last[p] >= then.cutoff && last[p] < now.cutoff).then_some(id)
    })
}
