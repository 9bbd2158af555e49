//! Profile facts: what raw rows say about a person, folded into small,
//! mergeable summaries.
//!
//! A refresh reads each raw row once. The row's identifiers, strongest
//! first, form its *key*; its contribution (an event of some type, an order
//! and its amount, a CRM trait, a survey score, a consent record) is folded
//! into the [`Partial`] of that key as [`Cell`]s, one per field, each with a
//! merge [`Rule`] that is commutative and associative (sums, maxima, "best
//! by source priority then recency", "latest"). After the identity graph is
//! resolved, every key's partial is merged into the profile of its
//! strongest identifier that has one. Because merging does not depend on
//! order, partials can be stored and topped up by the next refresh with the
//! new files only: that is what makes refreshes incremental.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::common::HashMap;

use super::graph::Graph;

/// How two cells of one field combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `num` adds up (counts, money in cents).
    Sum,
    /// The largest `at` wins (last order time).
    Max,
    /// The smallest `at` wins (first order time).
    Min,
    /// Survivorship: lowest `rank` (source priority), then latest `at`,
    /// then the smaller value, so ties never depend on arrival order.
    Best,
    /// The latest `at` wins; ties go to the larger value.
    Latest,
}

/// One field of a partial: a fact about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub field: u16,
    pub rank: i32,
    pub at: i64,
    pub num: i64,
    pub text: Option<Arc<str>>,
}

impl Cell {
    pub fn sum(field: u16, num: i64) -> Cell {
        Cell {
            field,
            rank: 0,
            at: 0,
            num,
            text: None,
        }
    }

    /// Combine `other` into `self` by `rule`.
    fn absorb(&mut self, other: &Cell, rule: Rule) {
        let replace = match rule {
            Rule::Sum => {
                self.num += other.num;
                false
            }
            Rule::Max => other.at > self.at,
            Rule::Min => other.at < self.at,
            Rule::Best => {
                (
                    other.rank,
                    std::cmp::Reverse(other.at),
                    other.num,
                    &other.text,
                ) < (self.rank, std::cmp::Reverse(self.at), self.num, &self.text)
            }
            Rule::Latest => {
                (other.at, other.num, &other.text).cmp(&(self.at, self.num, &self.text))
                    == Ordering::Greater
            }
        };
        if replace {
            *self = other.clone();
        }
    }
}

/// The cells of one key (or profile), sorted by field.
pub type Partial = Vec<Cell>;

/// Fields known to every refresh; channel counts are added as they appear.
pub mod field {
    pub const EVENTS: u16 = 0;
    pub const PAGE_VIEWS: u16 = 1;
    pub const TRACKS: u16 = 2;
    pub const IDENTIFIES: u16 = 3;
    pub const ORDERS: u16 = 4;
    pub const NET_ORDERS: u16 = 5;
    pub const GROSS_CENTS: u16 = 6;
    pub const NET_CENTS: u16 = 7;
    pub const LAST_ORDER_AT: u16 = 8;
    pub const LAST_NET_ORDER_AT: u16 = 9;
    pub const FIRST_ORDER_AT: u16 = 10;
    /// `last_nps`, `last_csat`, `last_ces`: [`SURVEYS`] in order.
    pub const SURVEY: u16 = 11;
    /// `consent_<purpose>` for [`PURPOSES`] in order.
    pub const CONSENT: u16 = 14;
    /// CRM traits, [`TRAITS`] in order.
    pub const TRAIT: u16 = 18;
    /// First field number given to a channel count.
    pub const FIRST_CHANNEL: u16 = 27;

    pub const SURVEYS: [&str; 3] = ["nps", "csat", "ces"];
    pub const PURPOSES: [&str; 4] = ["email_marketing", "sms_marketing", "ads", "analytics"];
    /// CRM traits copied to the profile; `birth_date` (days) and
    /// `newsletter` (0/1) are kept in `num`, the others in `text`.
    pub const TRAITS: [&str; 9] = [
        "first_name",
        "last_name",
        "street",
        "city",
        "postal_code",
        "country",
        "birth_date",
        "loyalty_tier",
        "newsletter",
    ];
}

/// The field catalogue: names (as stored) and merge rules.
#[derive(Debug, Clone)]
pub struct Fields {
    names: Vec<Arc<str>>,
    rules: Vec<Rule>,
    index: HashMap<Arc<str>, u16>,
}

impl Default for Fields {
    fn default() -> Self {
        let mut fields = Fields {
            names: Vec::new(),
            rules: Vec::new(),
            index: HashMap::new(),
        };
        for name in [
            "events",
            "page_views",
            "tracks",
            "identifies",
            "orders",
            "net_orders",
            "gross_cents",
            "net_cents",
        ] {
            fields.intern(name, Rule::Sum);
        }
        fields.intern("last_order_at", Rule::Max);
        fields.intern("last_net_order_at", Rule::Max);
        fields.intern("first_order_at", Rule::Min);
        for s in field::SURVEYS {
            fields.intern(&format!("survey:{s}"), Rule::Latest);
        }
        for p in field::PURPOSES {
            fields.intern(&format!("consent:{p}"), Rule::Latest);
        }
        for t in field::TRAITS {
            fields.intern(&format!("trait:{t}"), Rule::Best);
        }
        debug_assert_eq!(fields.names.len(), field::FIRST_CHANNEL as usize);
        fields
    }
}

impl Fields {
    fn intern(&mut self, name: &str, rule: Rule) -> u16 {
        if let Some(&f) = self.index.get(name) {
            return f;
        }
        let f = self.names.len() as u16;
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.rules.push(rule);
        self.index.insert(name, f);
        f
    }

    /// The count field of order channel `channel`.
    pub fn channel(&mut self, channel: &str) -> u16 {
        match self.index.get(format!("channel:{channel}").as_str()) {
            Some(&f) => f,
            None => self.intern(&format!("channel:{channel}"), Rule::Sum),
        }
    }

    /// The field stored under `name`, registering channel counts; `None`
    /// for a name this version does not know.
    pub fn by_name(&mut self, name: &str) -> Option<u16> {
        if let Some(&f) = self.index.get(name) {
            return Some(f);
        }
        name.strip_prefix("channel:").map(|c| self.channel(c))
    }

    /// Number of fields known.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, field: u16) -> &str {
        &self.names[field as usize]
    }

    /// `(field, channel name)` of every channel count.
    pub fn channels(&self) -> impl Iterator<Item = (u16, &str)> {
        self.names
            .iter()
            .enumerate()
            .skip(field::FIRST_CHANNEL as usize)
            .filter_map(|(i, n)| n.strip_prefix("channel:").map(|c| (i as u16, c)))
    }

    /// Fold `cell` into `partial`.
    pub fn add(&self, partial: &mut Partial, cell: Cell) {
        match partial.binary_search_by_key(&cell.field, |c| c.field) {
            Ok(i) => partial[i].absorb(&cell, self.rules[cell.field as usize]),
            Err(i) => partial.insert(i, cell),
        }
    }

    /// Fold every cell of `from` into `into`.
    pub fn merge(&self, into: &mut Partial, from: &Partial) {
        for cell in from {
            match into.binary_search_by_key(&cell.field, |c| c.field) {
                Ok(i) => into[i].absorb(cell, self.rules[cell.field as usize]),
                Err(i) => into.insert(i, cell.clone()),
            }
        }
    }
}

/// The cell of `field` in a partial, if any.
pub fn get(partial: &Partial, field: u16) -> Option<&Cell> {
    partial
        .binary_search_by_key(&field, |c| c.field)
        .ok()
        .map(|i| &partial[i])
}

/// Fields `0..COUNTED` (events by type) are counted per key in a dense
/// array rather than as cells: most keys carry nothing else, and a fixed
/// array costs 16 bytes where cells cost 40 each plus a heap allocation.
pub const COUNTED: usize = 4;

/// Interned row keys and their partials.
///
/// A key is a short list of node numbers. Keys of up to four nodes (every
/// default source set) are hashed as one `u128`, compared in one
/// instruction; longer ones go through a slice map. Key nodes are stored
/// end to end in one vector.
#[derive(Debug, Default)]
pub struct Facts {
    pub fields: Fields,
    short: HashMap<u128, u32>,
    long: HashMap<Box<[u32]>, u32>,
    nodes: Vec<u32>,
    /// Key number → end of its nodes in `nodes`.
    ends: Vec<u32>,
    /// Key number → its facts, but for the counts of fields `0..COUNTED`.
    pub partials: Vec<Partial>,
    /// Key number → when it was seen and its counts: what every row
    /// updates, in one place (one cache miss per row key, not three).
    pub stats: Vec<KeyStats>,
}

/// What a row key's rows add up to besides its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStats {
    /// First and last time a row carried the key.
    pub first: i64,
    pub last: i64,
    /// Counts of fields `0..COUNTED`.
    pub counts: [u32; COUNTED],
}

impl Default for KeyStats {
    fn default() -> Self {
        KeyStats {
            first: i64::MAX,
            last: i64::MIN,
            counts: [0; COUNTED],
        }
    }
}

/// Four node numbers (padded with `u32::MAX`) as one integer.
fn pack(nodes: &[u32]) -> Option<u128> {
    if nodes.len() > 4 {
        return None;
    }
    let mut packed = u128::MAX;
    for (i, &n) in nodes.iter().enumerate() {
        packed &= !(u128::from(u32::MAX) << (32 * i));
        packed |= u128::from(n) << (32 * i);
    }
    Some(packed)
}

impl Facts {
    /// The number of the key made of `nodes` (strongest first).
    pub fn key(&mut self, nodes: &[u32]) -> u32 {
        let next = self.ends.len() as u32;
        let k = match pack(nodes) {
            Some(packed) => *self.short.entry(packed).or_insert(next),
            None => match self.long.get(nodes) {
                Some(&k) => k,
                None => {
                    self.long.insert(nodes.into(), next);
                    next
                }
            },
        };
        if k == next {
            self.nodes.extend_from_slice(nodes);
            self.ends.push(self.nodes.len() as u32);
            self.partials.push(Partial::new());
            self.stats.push(KeyStats::default());
        }
        k
    }

    /// Forget every key, keeping the allocated capacity.
    pub fn clear(&mut self) {
        self.fields = Fields::default();
        self.short.clear();
        self.long.clear();
        self.nodes.clear();
        self.ends.clear();
        self.partials.clear();
        self.stats.clear();
    }

    /// Free the index that finds a key by its nodes (half the memory of
    /// the keys) once no more rows are folded: [`Facts::key`] must not be
    /// called after this.
    pub fn drop_key_index(&mut self) {
        self.short = HashMap::new();
        self.long = HashMap::new();
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The nodes of key `k`, strongest first.
    pub fn key_nodes(&self, k: usize) -> &[u32] {
        let start = if k == 0 { 0 } else { self.ends[k - 1] as usize };
        &self.nodes[start..self.ends[k] as usize]
    }

    /// Every key's nodes, in key order.
    pub fn keys(&self) -> impl Iterator<Item = &[u32]> {
        (0..self.len()).map(|k| self.key_nodes(k))
    }

    /// Record a row carrying key `key` at `at`.
    pub fn seen(&mut self, key: u32, at: i64) {
        let k = key as usize;
        let stats = &mut self.stats[k];
        stats.first = stats.first.min(at);
        stats.last = stats.last.max(at);
    }

    /// Node times and links of `graph`, from the keys: a node was seen
    /// whenever a key holding it was, and a key links its strongest
    /// identifier to each of the others from the key's first sighting.
    pub fn derive_graph(&self, graph: &mut Graph) {
        for node in &mut graph.nodes {
            node.first_seen = i64::MAX;
            node.last_seen = i64::MIN;
        }
        graph.edges.clear();
        for (key, &KeyStats { first, last, .. }) in self.keys().zip(&self.stats) {
            for &n in key {
                let node = &mut graph.nodes[n as usize];
                node.first_seen = node.first_seen.min(first);
                node.last_seen = node.last_seen.max(last);
            }
            for &n in &key[1..] {
                graph.link(key[0], n, first);
            }
        }
    }

    /// Fold `cell` into key `key`.
    pub fn add(&mut self, key: u32, cell: Cell) {
        let f = cell.field as usize;
        if f < COUNTED {
            let n = u32::try_from(cell.num.max(0)).unwrap_or(u32::MAX);
            let count = &mut self.stats[key as usize].counts[f];
            *count = count.saturating_add(n);
        } else {
            self.fields.add(&mut self.partials[key as usize], cell);
        }
    }

    /// Fold another key's times and counts into key `key`.
    pub fn absorb_stats(&mut self, key: u32, other: &KeyStats) {
        let stats = &mut self.stats[key as usize];
        stats.first = stats.first.min(other.first);
        stats.last = stats.last.max(other.last);
        for (c, n) in stats.counts.iter_mut().zip(other.counts) {
            *c = c.saturating_add(n);
        }
    }

    /// Fold every fact of key `key` into `into` (a profile's partial).
    pub fn merge_into(&self, key: usize, into: &mut Partial) {
        for (f, &n) in self.stats[key].counts.iter().enumerate() {
            if n > 0 {
                self.fields.add(into, Cell::sum(f as u16, i64::from(n)));
            }
        }
        self.fields.merge(into, &self.partials[key]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(rank: i32, at: i64, text: &str) -> Cell {
        Cell {
            field: field::TRAIT,
            rank,
            at,
            num: 0,
            text: Some(text.into()),
        }
    }

    #[test]
    fn merging_is_order_independent() {
        let fields = Fields::default();
        let cells = [
            best(1, 50, "web-newer"),
            best(0, 10, "crm-old"),
            best(0, 20, "crm-new"),
            best(0, 20, "crm-new-tie"),
            Cell::sum(field::EVENTS, 2),
            Cell::sum(field::EVENTS, 3),
        ];
        let mut forward = Partial::new();
        let mut backward = Partial::new();
        for c in &cells {
            fields.add(&mut forward, c.clone());
        }
        for c in cells.iter().rev() {
            fields.add(&mut backward, c.clone());
        }
        assert_eq!(forward, backward);
        assert_eq!(get(&forward, field::EVENTS).unwrap().num, 5);
        // CRM beats the newer web form; among CRM rows the latest wins.
        assert_eq!(
            get(&forward, field::TRAIT).unwrap().text.as_deref(),
            Some("crm-new")
        );
    }

    #[test]
    fn latest_keeps_the_most_recent_record() {
        let fields = Fields::default();
        let mut p = Partial::new();
        for (at, status) in [(5, "granted"), (9, "denied"), (7, "granted")] {
            fields.add(
                &mut p,
                Cell {
                    field: field::CONSENT,
                    rank: 0,
                    at,
                    num: 0,
                    text: Some(status.into()),
                },
            );
        }
        assert_eq!(
            get(&p, field::CONSENT).unwrap().text.as_deref(),
            Some("denied")
        );
    }
}
