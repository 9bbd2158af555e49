//! `cdp.profiles` from a resolution and the facts: each row key's facts go
//! to the profile of its strongest identifier that has one (so an order
//! carrying a blocked customer id still counts for the email's profile),
//! identifiers are listed per type, and the merged facts become the
//! profile's traits and computed columns.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Int64Array, ListBuilder, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::SchemaRef;

use super::changes::Visibility;
use super::config::IdentityConfig;
use super::consent;
use super::facts::{CONFLICT_RANK, Cell, Facts, NO_TEXT, Partial, field, get};
use super::graph::{Graph, NodeId, Resolution, profile_id_array};
use crate::error::{Error, Result};
use crate::schema::cdp;
use uuid::Uuid;

/// One profile being assembled.
struct Profile {
    id: Uuid,
    /// Its place among the resolution's profiles (before sorting by id).
    place: u32,
    /// Members, sorted by (type, value).
    nodes: Vec<NodeId>,
}

/// Profiles per batch of `cdp.profiles`.
const BATCH: usize = 64 * 1024;

/// Which profiles an incremental refresh writes again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Selection<'s> {
    /// Per profile of [`Resolution::components`]: whether it is written.
    pub profiles: &'s [bool],
    /// Per key: the profile its facts go to (by the same places), or
    /// `u32::MAX`, as [`super::changes::compare`] found them.
    pub owners: &'s [u32],
}

/// Which profiles are written, and where each key's facts go.
#[derive(Debug, Clone, Copy)]
pub(super) enum Keys<'s> {
    /// Every profile: a key's facts go to the profile of its strongest
    /// identifier that has one (the keys of these facts).
    All(&'s Facts),
    /// Only the profiles a selection marks, its keys' owners as it says.
    Selected(Selection<'s>),
}

/// The profiles of a resolution, in profile id order, ready to be written
/// as `cdp.profiles` once their facts are there ([`Planned::with`]);
/// anonymous-only profiles idle since before `now - anonymous_idle_days`
/// are left out. A selection needs no facts yet: the plan can be made
/// while its keys' stored facts are read.
pub(super) fn plan<'a>(
    config: &'a IdentityConfig,
    graph: &'a Graph,
    resolution: &Resolution,
    now_micros: i64,
    keys: Keys<'_>,
) -> Result<Planned<'a>> {
    let mut profiles: Vec<Profile> = Vec::new();
    // Each component's place in `profiles`; `SKIPPED` for a profile not
    // selected (its keys' facts are not read).
    const SKIPPED: u32 = u32::MAX - 1;
    let mut place_of: Vec<u32> = Vec::with_capacity(resolution.profiles);
    for (c, (id, members)) in resolution.components().enumerate() {
        let chosen = match keys {
            Keys::Selected(s) => s.profiles[c],
            Keys::All(_) => true,
        };
        let place = if chosen {
            profiles.len() as u32
        } else {
            SKIPPED
        };
        place_of.push(place);
        if chosen {
            profiles.push(Profile {
                id,
                place,
                nodes: members.to_vec(),
            });
        }
    }
    // Each key's profile (by place), read now; its facts are merged batch
    // by batch when written, so only one batch of merged profiles is ever
    // in memory. A selection brings the keys' owners along; otherwise a
    // key's facts go to the profile of its strongest identifier that has
    // one.
    let key_place: Vec<u32> = match keys {
        Keys::Selected(s) => s
            .owners
            .iter()
            .map(|&c| match place_of.get(c as usize) {
                Some(&p) if p != SKIPPED => p,
                _ => u32::MAX,
            })
            .collect(),
        Keys::All(facts) => {
            let mut place_of_node = vec![u32::MAX; graph.len()];
            for ((_, members), &place) in resolution.components().zip(&place_of) {
                for &n in members {
                    place_of_node[n as usize] = place;
                }
            }
            facts
                .keys()
                .map(|key| {
                    key.iter()
                        .map(|&n| place_of_node[n as usize])
                        .find(|&p| p != u32::MAX)
                        .unwrap_or(u32::MAX)
                })
                .collect()
        }
    };
    drop(place_of);
    let visibility = Visibility::new(config, anonymous_cutoff(config, now_micros));
    let mut position = vec![u32::MAX; profiles.len()];
    profiles.retain(|p| visibility.shows(graph, &p.nodes));
    profiles.sort_unstable_by_key(|p| p.id);
    for (i, p) in profiles.iter().enumerate() {
        position[p.place as usize] = i as u32;
    }
    // Each identifier's type and value fetched once (they are spread over
    // the whole graph), not at every comparison.
    let mut members: Vec<(u16, &str, NodeId)> = Vec::new();
    for p in &mut profiles {
        members.clear();
        members.extend(
            p.nodes
                .iter()
                .map(|&n| (graph.id_type(n), graph.value(n), n)),
        );
        members.sort_unstable();
        p.nodes.clear();
        p.nodes.extend(members.iter().map(|m| m.2));
    }
    let (key_start, keys) = keys_by_profile(&key_place, &position, profiles.len());
    let type_names: Vec<String> = config.types.iter().map(|t| t.name.clone()).collect();
    Ok(Planned {
        config,
        graph,
        now_micros,
        schema: cdp::profiles(&type_names, &config.consent.purposes),
        profiles,
        key_start,
        keys,
    })
}

/// The keys of each profile, in key order (a counting sort): profile
/// `p`'s keys are `keys[key_start[p]..key_start[p + 1]]`. `key_place` is
/// each key's profile by place (`u32::MAX`: none), `position` each place's
/// position among the `profiles` written (`u32::MAX`: not written).
fn keys_by_profile(key_place: &[u32], position: &[u32], profiles: usize) -> (Vec<u32>, Vec<u32>) {
    let mut key_start = vec![0u32; profiles + 1];
    let key_position = |p: u32| match p {
        u32::MAX => u32::MAX,
        p => position[p as usize],
    };
    for &p in key_place {
        let at = key_position(p);
        if at != u32::MAX {
            key_start[at as usize + 1] += 1;
        }
    }
    for i in 1..key_start.len() {
        key_start[i] += key_start[i - 1];
    }
    let mut next = key_start.clone();
    let mut keys = vec![0u32; key_start[profiles] as usize];
    for (k, &p) in key_place.iter().enumerate() {
        let at = key_position(p);
        if at != u32::MAX {
            keys[next[at as usize] as usize] = k as u32;
            next[at as usize] += 1;
        }
    }
    (key_start, keys)
}

/// Each identifier type's list of the `chunk`'s profiles' values, and
/// their first and last seen times, in one pass over each profile's
/// identifiers (sorted by type, so each type's list keeps value order).
fn identifier_lists(
    types: usize,
    graph: &Graph,
    chunk: &[Profile],
) -> (Vec<ArrayRef>, Vec<Option<i64>>, Vec<Option<i64>>) {
    let mut lists: Vec<_> = (0..types)
        .map(|_| ListBuilder::new(StringBuilder::new()))
        .collect();
    let (mut first_seen, mut last_seen) = (Vec::new(), Vec::new());
    let mut any = vec![false; types];
    for p in chunk {
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        for &n in &p.nodes {
            let t = graph.id_type(n) as usize;
            lists[t].values().append_value(graph.value(n));
            any[t] = true;
            first = first.min(graph.first_seen[n as usize]);
            last = last.max(graph.last_seen[n as usize]);
        }
        // No identifier of a type: NULL, as array_agg gives.
        for (list, any) in lists.iter_mut().zip(&mut any) {
            list.append(std::mem::take(any));
        }
        let empty = p.nodes.is_empty();
        first_seen.push(Some(if empty { 0 } else { first }));
        last_seen.push(Some(if empty { 0 } else { last }));
    }
    let lists = lists
        .iter_mut()
        .map(|l| Arc::new(l.finish()) as ArrayRef)
        .collect();
    (lists, first_seen, last_seen)
}

/// Cents as `numeric(18,2)`.
fn money(values: Vec<Option<i64>>) -> Result<ArrayRef> {
    Ok(Arc::new(
        Decimal128Array::from(
            values
                .into_iter()
                .map(|v| v.map(i128::from))
                .collect::<Vec<_>>(),
        )
        .with_precision_and_scale(18, 2)
        .map_err(|e| Error::arrow("building cdp.profiles", e))?,
    ))
}

/// The profiles of a resolution, sorted, with the keys whose facts each
/// merges ([`plan`]).
pub(super) struct Planned<'a> {
    config: &'a IdentityConfig,
    graph: &'a Graph,
    now_micros: i64,
    schema: SchemaRef,
    profiles: Vec<Profile>,
    /// The keys of profile `p` are `keys[key_start[p]..key_start[p + 1]]`.
    key_start: Vec<u32>,
    keys: Vec<u32>,
}

impl<'a> Planned<'a> {
    /// The plan with its keys' facts: ready to be written.
    pub(super) fn with<'f>(self, facts: &'f Facts) -> Assembled<'f>
    where
        'a: 'f,
    {
        Assembled { plan: self, facts }
    }
}

/// The profiles of a resolution, merged and sorted, turned into batches
/// of `cdp.profiles` one at a time (never all in memory).
pub(super) struct Assembled<'a> {
    plan: Planned<'a>,
    facts: &'a Facts,
}

impl Assembled<'_> {
    pub(super) fn schema(&self) -> SchemaRef {
        self.plan.schema.clone()
    }

    /// Number of profiles to write.
    pub(super) fn len(&self) -> usize {
        self.plan.profiles.len()
    }

    /// The batches of `cdp.profiles` of the profiles `range` (places in
    /// profile id order), in that order; each batch's profiles have their
    /// keys' facts merged while it is built. Disjoint ranges can be built
    /// on threads of their own.
    pub(super) fn batches(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        // The merged cells of a batch's profiles, end to end.
        let (mut cells, mut ends, mut scratch) = (Vec::new(), Vec::new(), Partial::new());
        range.clone().step_by(BATCH).map(move |start| {
            let end = (start + BATCH).min(range.end);
            cells.clear();
            ends.clear();
            let plan = &self.plan;
            for p in start..end {
                let keys = plan.key_start[p] as usize..plan.key_start[p + 1] as usize;
                self.facts.merge_keys_into(&plan.keys[keys], &mut scratch);
                cells.extend_from_slice(&scratch);
                ends.push(cells.len());
            }
            let merged: Vec<&[Cell]> = ends
                .iter()
                .scan(0, |from, &to| {
                    let m = &cells[*from..to];
                    *from = to;
                    Some(m)
                })
                .collect();
            self.batch(&plan.profiles[start..end], &merged)
        })
    }

    /// The rows of the profiles `chunk`, whose merged facts are `merged`.
    fn batch(&self, chunk: &[Profile], merged: &[&[Cell]]) -> Result<RecordBatch> {
        let (config, graph, facts) = (self.plan.config, self.plan.graph, self.facts);
        let now_micros = self.plan.now_micros;
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(profile_id_array(chunk.iter().map(|p| Some(p.id))))];
        let (lists, first_seen, last_seen) = identifier_lists(config.types.len(), graph, chunk);
        columns.extend(lists);
        // Where each profile's cell of each fixed field is: one pass over
        // its cells, not a search per column.
        let slots: Vec<[u8; FIXED]> = merged.iter().map(|m| fixed_slots(m)).collect();
        let cells = |f: u16| {
            merged
                .iter()
                .zip(&slots)
                .map(move |(m, s)| match s[f as usize] {
                    NO_SLOT => None,
                    i => Some(&m[i as usize]),
                })
        };
        let text = |f: u16| -> ArrayRef {
            Arc::new(StringArray::from_iter(cells(f).map(|c| {
                c.filter(|c| c.text != NO_TEXT)
                    .map(|c| facts.texts.get(c.text))
            })))
        };
        let num = |f: u16| cells(f).map(|c| c.map(|c| c.num));
        let count = |f: u16| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(num(f).map(|n| n.unwrap_or(0))))
        };
        let time = |values: Vec<Option<i64>>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
        };
        let trait_ = |name: &str| {
            field::TRAIT + field::TRAITS.iter().position(|t| *t == name).unwrap_or(0) as u16
        };
        // The text traits come first in TRAITS: names to country.
        for name in &field::TRAITS[..6] {
            columns.push(text(trait_(name)));
        }
        columns.push(Arc::new(Date32Array::from_iter(
            num(trait_("birth_date")).map(|n| n.map(|d| d as i32)),
        )));
        columns.push(text(trait_("loyalty_tier")));
        columns.push(Arc::new(BooleanArray::from_iter(
            num(trait_("newsletter")).map(|n| n.map(|b| b != 0)),
        )));
        columns.push(time(first_seen));
        columns.push(time(last_seen));
        for f in [
            field::EVENTS,
            field::PAGE_VIEWS,
            field::TRACKS,
            field::IDENTIFIES,
            field::ORDERS,
            field::NET_ORDERS,
        ] {
            columns.push(count(f));
        }
        let orders: Vec<i64> = num(field::ORDERS).map(|n| n.unwrap_or(0)).collect();
        let net_orders: Vec<i64> = num(field::NET_ORDERS).map(|n| n.unwrap_or(0)).collect();
        let gross: Vec<Option<i64>> = num(field::GROSS_CENTS)
            .zip(&orders)
            .map(|(c, &o)| c.filter(|_| o > 0))
            .collect();
        let net: Vec<Option<i64>> = num(field::NET_CENTS)
            .zip(&net_orders)
            .map(|(c, &o)| c.filter(|_| o > 0))
            .collect();
        let average: Vec<Option<i64>> = net
            .iter()
            .zip(&net_orders)
            .map(|(c, &o)| c.map(|c| round_div(c, o)))
            .collect();
        columns.push(money(gross)?);
        columns.push(money(net)?);
        columns.push(money(average)?);
        for f in [
            field::FIRST_ORDER_AT,
            field::LAST_ORDER_AT,
            field::LAST_NET_ORDER_AT,
        ] {
            columns.push(time(cells(f).map(|c| c.map(|c| c.at)).collect()));
        }
        columns.push(Arc::new(StringArray::from_iter(
            merged.iter().map(|m| preferred_channel(facts, m)),
        )));
        for s in 0..field::SURVEYS.len() as u16 {
            columns.push(Arc::new(Int64Array::from_iter(num(field::SURVEY + s))));
            columns.push(time(
                cells(field::SURVEY + s).map(|c| c.map(|c| c.at)).collect(),
            ));
        }
        for purpose in &config.consent.purposes {
            let answers = merged.iter().map(|m| {
                let cell = get(m, facts.fields.consent_field(purpose)?)?;
                Some(match cell.rank {
                    CONFLICT_RANK => consent::CONFLICT,
                    _ => facts.texts.get(cell.text),
                })
            });
            columns.push(Arc::new(StringArray::from_iter(answers)));
        }
        columns.push(time(vec![Some(now_micros); chunk.len()]));
        RecordBatch::try_new(self.schema(), columns)
            .map_err(|e| Error::arrow("building cdp.profiles", e))
    }
}

/// Fields with a column of their own (the channels' counts, after them,
/// make the preferred channel).
const FIXED: usize = field::FIRST_CHANNEL as usize;

/// No cell of a field in [`fixed_slots`].
const NO_SLOT: u8 = u8::MAX;

/// The place of the cell of each of the fields `0..FIXED` in `partial`
/// (sorted by field), or [`NO_SLOT`].
fn fixed_slots(partial: &[Cell]) -> [u8; FIXED] {
    let mut slots = [NO_SLOT; FIXED];
    for (i, c) in partial.iter().enumerate().take(FIXED) {
        match slots.get_mut(c.field as usize) {
            Some(slot) => *slot = i as u8,
            None => break,
        }
    }
    slots
}

/// Microseconds before which an anonymous-only profile is idle too long
/// to be in `cdp.profiles`.
pub(super) fn anonymous_cutoff(config: &IdentityConfig, now_micros: i64) -> i64 {
    now_micros - i64::from(config.anonymous_idle_days) * 86_400_000_000
}

/// The channel with the most orders (ties: alphabetical).
fn preferred_channel<'f>(facts: &'f Facts, partial: &[Cell]) -> Option<&'f str> {
    facts
        .fields
        .channels()
        .filter_map(|(f, name)| get(partial, f).map(|c: &Cell| (c.num, name)))
        .filter(|(n, _)| *n > 0)
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
        .map(|(_, name)| name)
}

/// `a / b` rounded half away from zero (cents of an average).
fn round_div(a: i64, b: i64) -> i64 {
    let q = a / b;
    let r = a % b;
    if 2 * r.abs() >= b.abs() {
        q + if (a < 0) != (b < 0) { -1 } else { 1 }
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::round_div;

    #[test]
    fn averages_round_half_away_from_zero() {
        assert_eq!(round_div(1000, 3), 333);
        assert_eq!(round_div(1001, 2), 501);
        assert_eq!(round_div(-1001, 2), -501);
        assert_eq!(round_div(1000, 4), 250);
    }
}
