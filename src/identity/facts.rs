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
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::common::HashMap;
use hashbrown::DefaultHashBuilder;

use super::graph::Graph;
use super::interner::Interner;
use super::table::TagTable;

/// Keys looked up together when a summary is merged (see [`TagTable`]).
const BATCH: usize = 32;

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
    /// A consent answer: [`Rule::Latest`] among the records of one
    /// identifier; when a profile's identifiers disagree the profile's
    /// cell is marked [`CONFLICT_RANK`] (see [`Facts::merge_keys_into`]).
    Consent,
}

/// The `rank` of a profile's consent cell whose identifiers answered
/// differently.
pub const CONFLICT_RANK: u16 = u16::MAX;

/// No text in a cell.
pub const NO_TEXT: u32 = u32::MAX;

/// One field of a partial: a fact about a key. Its text, if any, is a
/// number in the [`Facts::texts`] of the facts it belongs to (24 bytes a
/// cell, where an owned string would cost a pointer and an allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub field: u16,
    pub rank: u16,
    pub text: u32,
    pub at: i64,
    pub num: i64,
}

impl Cell {
    pub fn sum(field: u16, num: i64) -> Cell {
        Cell {
            field,
            rank: 0,
            text: NO_TEXT,
            at: 0,
            num,
        }
    }

    /// Combine `other` into `self` by `rule`, texts read from `texts`.
    fn absorb(&mut self, other: &Cell, rule: Rule, texts: &Interner) {
        let text = |c: &Cell| (c.text != NO_TEXT).then(|| texts.get(c.text));
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
                    text(other),
                ) < (self.rank, std::cmp::Reverse(self.at), self.num, text(self))
            }
            Rule::Latest | Rule::Consent => {
                (other.at, other.num, text(other)).cmp(&(self.at, self.num, text(self)))
                    == Ordering::Greater
            }
        };
        if replace {
            *self = *other;
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
    /// `consent:<purpose>` for [`PURPOSES`] in order (the purposes of
    /// earlier releases; others are numbered as they appear).
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
            fields.intern(&format!("consent:{p}"), Rule::Consent);
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

    /// The answer field of consent purpose `purpose`.
    pub fn consent(&mut self, purpose: &str) -> u16 {
        match self.index.get(format!("consent:{purpose}").as_str()) {
            Some(&f) => f,
            None => self.intern(&format!("consent:{purpose}"), Rule::Consent),
        }
    }

    /// The answer field of `purpose`, if any record answered it.
    pub fn consent_field(&self, purpose: &str) -> Option<u16> {
        self.index
            .get(format!("consent:{purpose}").as_str())
            .copied()
    }

    /// The field stored under `name`, registering channel counts and
    /// consent purposes; `None` for a name this version does not know.
    pub fn by_name(&mut self, name: &str) -> Option<u16> {
        if let Some(&f) = self.index.get(name) {
            return Some(f);
        }
        if let Some(purpose) = name.strip_prefix("consent:") {
            return Some(self.consent(purpose));
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

    /// Fold `cell` into `partial` (texts of both in `texts`).
    pub fn add(&self, partial: &mut Partial, cell: Cell, texts: &Interner) {
        match partial.binary_search_by_key(&cell.field, |c| c.field) {
            Ok(i) => partial[i].absorb(&cell, self.rules[cell.field as usize], texts),
            Err(i) => partial.insert(i, cell),
        }
    }

    /// Fold every cell of `from` into `into` (a merge of two sorted runs).
    pub fn merge(&self, into: &mut Partial, from: &[Cell], texts: &Interner) {
        let (Some(last), Some(first)) = (into.last(), from.first()) else {
            into.extend_from_slice(from);
            return;
        };
        if last.field < first.field {
            into.extend_from_slice(from);
            return;
        }
        for cell in from {
            self.add(into, *cell, texts);
        }
    }
}

/// A consent field whose identifiers' latest answers disagree: the
/// identifiers that answered, and the time of the latest answer.
struct Disagreement {
    field: u16,
    holders: Vec<u32>,
    latest: i64,
}

/// The consent fields whose answers disagree between identifiers, given
/// every `(field, identifier, at, answer)`: each identifier's latest
/// answer counts (ties: the larger text, as [`Rule::Latest`]).
fn disagreements(answers: &mut [(u16, u32, i64, &str)]) -> Vec<Disagreement> {
    answers.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then((b.2, b.3).cmp(&(a.2, a.3)))
    });
    let mut found: Vec<Disagreement> = Vec::new();
    for field in answers.chunk_by(|a, b| a.0 == b.0) {
        // Each identifier's latest answer comes first among its answers.
        let latest: Vec<_> = field.chunk_by(|a, b| a.1 == b.1).map(|h| h[0]).collect();
        if latest.iter().any(|a| a.3 != latest[0].3) {
            found.push(Disagreement {
                field: latest[0].0,
                holders: latest.iter().map(|a| a.1).collect(),
                latest: latest.iter().map(|a| a.2).max().unwrap_or(i64::MIN),
            });
        }
    }
    found
}

/// The cell of `field` in a partial, if any.
pub fn get(partial: &[Cell], field: u16) -> Option<&Cell> {
    partial
        .binary_search_by_key(&field, |c| c.field)
        .ok()
        .map(|i| &partial[i])
}

/// Fields `0..COUNTED` (events by type) are counted per key in a dense
/// array rather than as cells: most keys carry nothing else, and a fixed
/// array costs 16 bytes where cells cost 40 each plus a heap allocation.
pub const COUNTED: usize = 4;

/// A key without cells.
const NO_CELLS: u32 = u32::MAX;

/// Interned row keys and their partials.
///
/// A key is a short list of node numbers, stored end to end in one vector;
/// a [`TagTable`] of key numbers finds a key without storing it twice.
#[derive(Debug, Default)]
pub struct Facts {
    pub fields: Fields,
    /// Texts of the cells (`Cell::text` numbers).
    pub texts: Interner,
    /// Key numbers by the hash of their nodes.
    index: TagTable,
    hasher: DefaultHashBuilder,
    nodes: Vec<u32>,
    /// Key number → end of its nodes in `nodes`.
    ends: Vec<u32>,
    /// Key number → the number of its cells in `partials`, or
    /// [`NO_CELLS`]: most keys carry only counts (an anonymous visitor's
    /// events), and a stored key's cells are read only when its profile is
    /// rewritten, so 4 bytes a key rather than an empty `Vec`'s 24.
    slots: Vec<u32>,
    /// The facts of the keys that have cells, but for the counts of fields
    /// `0..COUNTED`.
    partials: Vec<Partial>,
    /// Key number → when it was seen and its counts: what every row
    /// updates, in one place (one cache miss per row key, not three).
    pub stats: Vec<KeyStats>,
}

/// The parts of a graph that the keys give ([`Facts::derive_graph`]).
#[derive(Debug)]
pub struct Derived {
    pub first_seen: Vec<i64>,
    pub last_seen: Vec<i64>,
    pub edges: Vec<super::graph::Edge>,
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

impl KeyStats {
    /// Fold another key's times and counts into these.
    pub fn absorb(&mut self, other: &KeyStats) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        for (c, n) in self.counts.iter_mut().zip(other.counts) {
            *c = c.saturating_add(n);
        }
    }
}

impl Facts {
    /// No keys.
    pub fn new() -> Facts {
        Facts {
            texts: Interner::new(),
            ..Facts::default()
        }
    }

    /// The number of the key made of `nodes` (strongest first).
    pub fn key(&mut self, nodes: &[u32]) -> u32 {
        let hash = self.hasher.hash_one(nodes);
        self.key_hashed(hash, nodes)
    }

    /// [`Facts::key`] with `hash` the hash of `nodes`.
    fn key_hashed(&mut self, hash: u64, nodes: &[u32]) -> u32 {
        let (all, ends) = (&self.nodes, &self.ends);
        if let Some(k) = self
            .index
            .find(hash, |k| key_slice(all, ends, k as usize) == nodes)
        {
            return k;
        }
        let k = self.push_key(nodes, KeyStats::default());
        self.index.insert(hash, k);
        k
    }

    /// Read what the lookups of `hashes` will read (their home slots, then
    /// their candidates' nodes, times and facts) for their cache misses to
    /// overlap.
    fn load_ahead(&self, hashes: &[u64]) {
        let mut sink = 0u64;
        for &hash in hashes {
            sink ^= self.index.touch(hash);
        }
        let mut found = [u32::MAX; BATCH];
        for (f, &hash) in found.iter_mut().zip(hashes) {
            if let Some(k) = self.index.candidate(hash) {
                *f = k;
                let k = k as usize;
                sink ^= u64::from(self.ends[k]) ^ self.stats[k].last as u64;
                sink ^= u64::from(self.slots[k]);
            }
        }
        for k in found.into_iter().filter(|&k| k != u32::MAX) {
            let start = match k {
                0 => 0,
                k => self.ends[k as usize - 1] as usize,
            };
            sink ^= u64::from(self.nodes.get(start).copied().unwrap_or(0));
        }
        std::hint::black_box(sink);
    }

    /// Make room for `keys` more keys of `nodes` nodes in all, pushed with
    /// [`Facts::push_key`] (no index).
    pub fn reserve(&mut self, keys: usize, nodes: usize) {
        self.nodes.reserve(nodes);
        self.ends.reserve(keys);
        self.slots.reserve(keys);
        self.stats.reserve(keys);
    }

    /// Node numbers held by all keys together (what [`Facts::reserve`]
    /// makes room for besides the keys).
    pub fn key_node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Append key `nodes` without looking it up (it may repeat an earlier
    /// key: their facts add up wherever they are merged).
    pub fn push_key(&mut self, nodes: &[u32], stats: KeyStats) -> u32 {
        let k = self.ends.len() as u32;
        self.nodes.extend_from_slice(nodes);
        self.ends.push(self.nodes.len() as u32);
        self.slots.push(NO_CELLS);
        self.stats.push(stats);
        k
    }

    /// The nodes of the keys `from..` end to end (what a layer of the
    /// state stores flat).
    pub fn key_nodes_from(&self, from: usize) -> &[u32] {
        let start = match from {
            0 => 0,
            k => self.ends[k - 1] as usize,
        };
        &self.nodes[start..]
    }

    /// Append nodes of keys stored flat, before the keys themselves
    /// ([`Facts::push_stored_key`]).
    pub fn extend_key_nodes(&mut self, nodes: &[u32]) {
        self.nodes.extend_from_slice(nodes);
    }

    /// Append a key whose `size` nodes follow the last key's among those
    /// added by [`Facts::extend_key_nodes`]; `false` (nothing appended)
    /// when fewer were added.
    pub fn push_stored_key(&mut self, size: u32, stats: KeyStats) -> bool {
        let end = u64::from(self.ends.last().copied().unwrap_or(0)) + u64::from(size);
        if end > self.nodes.len() as u64 {
            return false;
        }
        self.ends.push(end as u32);
        self.slots.push(NO_CELLS);
        self.stats.push(stats);
        true
    }

    /// Whether every node added by [`Facts::extend_key_nodes`] belongs to a
    /// key.
    pub fn keys_hold_every_node(&self) -> bool {
        self.ends.last().copied().unwrap_or(0) as usize == self.nodes.len()
    }

    /// Forget every key, keeping the allocated capacity.
    pub fn clear(&mut self) {
        self.fields = Fields::default();
        self.texts.clear();
        self.index.clear();
        self.nodes.clear();
        self.ends.clear();
        self.slots.clear();
        self.partials.clear();
        self.stats.clear();
    }

    /// Free the index that finds a key by its nodes (half the memory of
    /// the keys) once no more rows are folded: [`Facts::key`] must not be
    /// called after this (texts can still be added).
    pub fn drop_key_index(&mut self) {
        self.index = TagTable::new();
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The cells of key `k` (none for the counts of fields `0..COUNTED`).
    pub fn cells(&self, k: usize) -> &[Cell] {
        match self.slots[k] {
            NO_CELLS => &[],
            slot => &self.partials[slot as usize],
        }
    }

    /// The nodes of key `k`, strongest first.
    pub fn key_nodes(&self, k: usize) -> &[u32] {
        key_slice(&self.nodes, &self.ends, k)
    }

    /// Every key's nodes, in key order.
    pub fn keys(&self) -> impl Iterator<Item = &[u32]> {
        (0..self.len()).map(|k| self.key_nodes(k))
    }

    /// Record a row carrying key `key` at `at`.
    pub fn seen(&mut self, key: u32, at: i64) {
        let stats = &mut self.stats[key as usize];
        stats.first = stats.first.min(at);
        stats.last = stats.last.max(at);
    }

    /// Fold the times of the keys from number `from` on into the nodes'
    /// first and last sightings.
    pub fn fold_node_times(&self, from: usize, first_seen: &mut [i64], last_seen: &mut [i64]) {
        // Keys holding more identifiers than there are (a whole state):
        // each identifier's two times side by side while folding, one
        // cache miss where two arrays cost two.
        if self.key_nodes_from(from).len() <= first_seen.len() {
            self.for_each_place(from, |n, first, last| {
                first_seen[n] = first_seen[n].min(first);
                last_seen[n] = last_seen[n].max(last);
            });
            return;
        }
        let mut times: Vec<[i64; 2]> = first_seen
            .iter()
            .zip(last_seen.iter())
            .map(|(&f, &l)| [f, l])
            .collect();
        self.for_each_place(from, |n, first, last| {
            let t = &mut times[n];
            (t[0], t[1]) = (t[0].min(first), t[1].max(last));
        });
        for ((f, l), t) in first_seen.iter_mut().zip(last_seen.iter_mut()).zip(times) {
            (*f, *l) = (t[0], t[1]);
        }
    }

    /// `each` identifier place of the keys from number `from` on, with its
    /// key's first and last time.
    fn for_each_place(&self, from: usize, mut each: impl FnMut(usize, i64, i64)) {
        for k in from..self.len() {
            let KeyStats { first, last, .. } = self.stats[k];
            for &n in self.key_nodes(k) {
                each(n as usize, first, last);
            }
        }
    }

    /// The links of the keys from number `from` on, sorted by ends, one
    /// per pair: a key links its strongest identifier to each of the
    /// others from the key's first sighting.
    pub fn links(&self, from: usize) -> Vec<super::graph::Edge> {
        let mut edges = Graph::default();
        for k in from..self.len() {
            let key = self.key_nodes(k);
            for &n in &key[1..] {
                edges.link(key[0], n, self.stats[k].first);
            }
        }
        edges.settle_edges();
        edges.edges
    }

    /// Node times and links of a graph of `nodes` identifiers, from the
    /// keys: a node was seen whenever a key holding it was, and a key
    /// links its strongest identifier to each of the others from the
    /// key's first sighting.
    pub fn derive_graph(&self, nodes: usize) -> Derived {
        let (mut first_seen, mut last_seen) = (vec![i64::MAX; nodes], vec![i64::MIN; nodes]);
        self.fold_node_times(0, &mut first_seen, &mut last_seen);
        Derived {
            first_seen,
            last_seen,
            edges: self.links(0),
        }
    }

    /// Fold `cell` (its text one of [`Facts::texts`]) into key `key`.
    pub fn add(&mut self, key: u32, cell: Cell) {
        let f = cell.field as usize;
        if f < COUNTED {
            let n = u32::try_from(cell.num.max(0)).unwrap_or(u32::MAX);
            let count = &mut self.stats[key as usize].counts[f];
            *count = count.saturating_add(n);
        } else {
            let slot = &mut self.slots[key as usize];
            if *slot == NO_CELLS {
                *slot = self.partials.len() as u32;
                self.partials.push(Partial::new());
            }
            self.fields
                .add(&mut self.partials[*slot as usize], cell, &self.texts);
        }
    }

    /// Fold the cells `run` (their texts of [`Facts::texts`]) into key
    /// `key`. A stored key's cells, read back in field order with one cell
    /// a field, become its partial as they are (no search, no growing);
    /// anything else is folded cell by cell.
    pub fn add_run(&mut self, key: u32, run: &[Cell]) {
        let stored = run.first().is_some_and(|c| c.field as usize >= COUNTED)
            && run.windows(2).all(|w| w[0].field < w[1].field);
        match (stored, self.slots[key as usize]) {
            (true, NO_CELLS) => {
                self.slots[key as usize] = self.partials.len() as u32;
                self.partials.push(run.to_vec());
            }
            _ => {
                for &cell in run {
                    self.add(key, cell);
                }
            }
        }
    }

    /// The text number of `text` in these facts' texts.
    pub fn text(&mut self, text: &str) -> u32 {
        self.texts.intern(0, text)
    }

    /// Every fact of the keys `keys` merged into `into` (emptied first):
    /// a profile's partial. The counts add up in place and come first
    /// (the lowest fields), so most keys' cells are appended, not searched.
    pub fn merge_keys_into(&self, keys: &[u32], into: &mut Partial) {
        into.clear();
        let mut counts = [0i64; COUNTED];
        for &k in keys {
            for (c, n) in counts.iter_mut().zip(self.stats[k as usize].counts) {
                *c += i64::from(n);
            }
        }
        let counted = counts.iter().enumerate().filter(|(_, n)| **n > 0);
        into.extend(counted.map(|(f, &n)| Cell::sum(f as u16, n)));
        let mut answers = Vec::new();
        for &k in keys {
            let cells = self.cells(k as usize);
            self.fields.merge(into, cells, &self.texts);
            let holder = self.key_nodes(k as usize).first().copied();
            answers.extend(
                cells
                    .iter()
                    .filter(|c| self.fields.rules[c.field as usize] == Rule::Consent)
                    .filter_map(|c| Some((c.field, holder?, c.at, self.texts.get(c.text)))),
            );
        }
        if answers.len() > 1 {
            for d in disagreements(&mut answers) {
                // Answers given once the identifiers were one person are
                // that person changing their mind: the latest wins. Older
                // ones were different people's, merged: a conflict.
                if d.latest < self.joined_at(keys, &d.holders)
                    && let Ok(i) = into.binary_search_by_key(&d.field, |c| c.field)
                {
                    into[i].rank = CONFLICT_RANK;
                }
            }
        }
    }

    /// When the identifiers `holders` became linked through the keys
    /// `keys` (each linking its identifiers from its first sighting on):
    /// the first time of the key that joined the last two of them, or
    /// `i64::MAX` if they never were.
    fn joined_at(&self, keys: &[u32], holders: &[u32]) -> i64 {
        let mut by_time = keys.to_vec();
        by_time.sort_unstable_by_key(|&k| self.stats[k as usize].first);
        let mut parent: HashMap<u32, u32> = HashMap::new();
        fn root(parent: &mut HashMap<u32, u32>, mut n: u32) -> u32 {
            while let Some(&p) = parent.get(&n) {
                if p == n {
                    break;
                }
                n = p;
            }
            n
        }
        for k in by_time {
            let nodes = self.key_nodes(k as usize);
            let Some((&first, rest)) = nodes.split_first() else {
                continue;
            };
            let a = root(&mut parent, first);
            for &n in rest {
                let b = root(&mut parent, n);
                if a != b {
                    parent.insert(b, a);
                }
            }
            let one = root(&mut parent, holders[0]);
            if holders[1..].iter().all(|&h| root(&mut parent, h) == one) {
                return self.stats[k as usize].first;
            }
        }
        i64::MAX
    }

    /// Merge `other` (a file's summary, its nodes numbered by `map`) into
    /// these facts, leaving `other` to be cleared.
    pub fn absorb(&mut self, other: &mut Facts, map: &[u32]) {
        self.take(other, map, true);
    }

    /// Append the keys of `other` (its nodes numbered by `map`) after
    /// these, without looking for equal keys here (their facts add up
    /// wherever they are merged): an incremental refresh's new keys.
    pub fn append(&mut self, other: &mut Facts, map: &[u32]) {
        self.take(other, map, false);
    }

    fn take(&mut self, other: &mut Facts, map: &[u32], dedup: bool) {
        let fields: Vec<u16> = (0..other.fields.len() as u16)
            .map(|f| self.fields.by_name(other.fields.name(f)).unwrap_or(f))
            .collect();
        let texts: Vec<u32> = (0..other.texts.len() as u32)
            .map(|t| self.texts.intern(0, other.texts.get(t)))
            .collect();
        if dedup {
            self.index.reserve(other.len());
        }
        // By batches: the keys renumbered and hashed, their lookups' memory
        // loaded together, then each key merged.
        let (mut mapped, mut bounds) = (Vec::with_capacity(BATCH * 4), Vec::with_capacity(BATCH));
        let mut hashes = [0u64; BATCH];
        let mut start = 0;
        while start < other.len() {
            let end = (start + BATCH).min(other.len());
            mapped.clear();
            bounds.clear();
            for k in start..end {
                mapped.extend(other.key_nodes(k).iter().map(|&n| map[n as usize]));
                bounds.push(mapped.len());
            }
            let key = |i: usize| &mapped[if i == 0 { 0 } else { bounds[i - 1] }..bounds[i]];
            if dedup {
                for (i, hash) in hashes.iter_mut().enumerate().take(end - start) {
                    *hash = self.hasher.hash_one(key(i));
                }
                self.load_ahead(&hashes[..end - start]);
            }
            for (i, k) in (start..end).enumerate() {
                let into = match dedup {
                    true => self.key_hashed(hashes[i], key(i)),
                    false => self.push_key(key(i), KeyStats::default()),
                };
                self.stats[into as usize].absorb(&other.stats[k]);
                for cell in other.cells(k) {
                    let cell = Cell {
                        field: fields[cell.field as usize],
                        text: match cell.text {
                            NO_TEXT => NO_TEXT,
                            t => texts[t as usize],
                        },
                        ..*cell
                    };
                    self.add(into, cell);
                }
            }
            start = end;
        }
    }
}

/// Key `k`'s nodes in a flat list with ends `ends`.
fn key_slice<'a>(nodes: &'a [u32], ends: &[u32], k: usize) -> &'a [u32] {
    let start = if k == 0 { 0 } else { ends[k - 1] as usize };
    &nodes[start..ends[k] as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(texts: &mut Interner, rank: u16, at: i64, text: &str) -> Cell {
        Cell {
            field: field::TRAIT,
            rank,
            at,
            num: 0,
            text: texts.intern(0, text),
        }
    }

    fn text_of<'a>(texts: &'a Interner, cell: Option<&Cell>) -> Option<&'a str> {
        cell.map(|c| texts.get(c.text))
    }

    #[test]
    fn a_run_of_cells_folds_as_its_cells_one_by_one() {
        let key = |facts: &mut Facts| facts.push_key(&[0], KeyStats::default());
        let sum = |field: u16, num: i64| Cell::sum(field, num);
        let runs: [&[Cell]; 3] = [
            // A stored key's cells: taken as they are.
            &[sum(field::ORDERS, 2), sum(field::GROSS_CENTS, 500)],
            // A field twice, and a counted field: folded cell by cell.
            &[sum(field::ORDERS, 2), sum(field::ORDERS, 3)],
            &[sum(field::EVENTS, 4), sum(field::ORDERS, 1)],
        ];
        for run in runs {
            let (mut by_run, mut by_cell) = (Facts::new(), Facts::new());
            let (a, b) = (key(&mut by_run), key(&mut by_cell));
            // Twice: the second run meets the cells of the first.
            for _ in 0..2 {
                by_run.add_run(a, run);
                for &cell in run {
                    by_cell.add(b, cell);
                }
            }
            assert_eq!(by_run.cells(a as usize), by_cell.cells(b as usize));
            assert_eq!(by_run.stats[a as usize], by_cell.stats[b as usize]);
        }
    }

    #[test]
    fn merging_is_order_independent() {
        let fields = Fields::default();
        let mut texts = Interner::new();
        let cells = [
            best(&mut texts, 1, 50, "web-newer"),
            best(&mut texts, 0, 10, "crm-old"),
            best(&mut texts, 0, 20, "crm-new"),
            best(&mut texts, 0, 20, "crm-new-tie"),
            Cell::sum(field::EVENTS, 2),
            Cell::sum(field::EVENTS, 3),
        ];
        let mut forward = Partial::new();
        let mut backward = Partial::new();
        for c in &cells {
            fields.add(&mut forward, *c, &texts);
        }
        for c in cells.iter().rev() {
            fields.add(&mut backward, *c, &texts);
        }
        assert_eq!(forward, backward);
        assert_eq!(get(&forward, field::EVENTS).unwrap().num, 5);
        // CRM beats the newer web form; among CRM rows the latest wins.
        assert_eq!(
            text_of(&texts, get(&forward, field::TRAIT)),
            Some("crm-new")
        );
    }

    #[test]
    fn latest_keeps_the_most_recent_record() {
        let fields = Fields::default();
        let mut texts = Interner::new();
        let mut p = Partial::new();
        for (at, status) in [(5, "granted"), (9, "denied"), (7, "granted")] {
            let cell = Cell {
                field: field::CONSENT,
                rank: 0,
                at,
                num: 0,
                text: texts.intern(0, status),
            };
            fields.add(&mut p, cell, &texts);
        }
        assert_eq!(text_of(&texts, get(&p, field::CONSENT)), Some("denied"));
    }

    #[test]
    fn identifiers_that_answer_differently_make_a_conflict() {
        let mut facts = Facts::new();
        let answer = |facts: &mut Facts, key: u32, at: i64, status: &str| {
            let text = facts.text(status);
            facts.add(
                key,
                Cell {
                    at,
                    text,
                    ..Cell::sum(field::CONSENT, 0)
                },
            );
        };
        // Customer 1 and email 2, linked from time 1: the customer changed
        // its mind (granted at 5, denied at 9 through a record without the
        // email): the latest answer counts, no conflict.
        let crm = facts.key(&[1, 2]);
        facts.seen(crm, 1);
        let crm_no_email = facts.key(&[1]);
        facts.seen(crm_no_email, 9);
        answer(&mut facts, crm, 5, "granted");
        answer(&mut facts, crm_no_email, 9, "denied");
        let mut profile = Partial::new();
        facts.merge_keys_into(&[crm, crm_no_email], &mut profile);
        let cell = get(&profile, field::CONSENT).unwrap();
        assert_eq!((facts.texts.get(cell.text), cell.rank), ("denied", 0));
        // A cookie that granted at 3, joined to the email at 10: two
        // people's answers merged, a conflict, whatever the keys' order.
        let cookie = facts.key(&[7]);
        facts.seen(cookie, 3);
        answer(&mut facts, cookie, 3, "granted");
        let link = facts.key(&[2, 7]);
        facts.seen(link, 10);
        for keys in [
            [crm, crm_no_email, cookie, link],
            [link, cookie, crm_no_email, crm],
        ] {
            facts.merge_keys_into(&keys, &mut profile);
            assert_eq!(get(&profile, field::CONSENT).unwrap().rank, CONFLICT_RANK);
        }
        // Once one person, a new answer through the cookie wins.
        answer(&mut facts, cookie, 12, "granted");
        facts.merge_keys_into(&[cookie, crm, crm_no_email, link], &mut profile);
        let cell = get(&profile, field::CONSENT).unwrap();
        assert_eq!(
            (facts.texts.get(cell.text), cell.rank, cell.at),
            ("granted", 0, 12)
        );
    }

    #[test]
    fn keys_are_interned_once_and_merge_their_facts() {
        let mut facts = Facts::new();
        let a = facts.key(&[3, 1]);
        let b = facts.key(&[1, 3]);
        assert_ne!(a, b, "a key's order is its identifiers' strength");
        assert_eq!(facts.key(&[3, 1]), a);
        for n in 0..5_000u32 {
            facts.key(&[n, n + 1, n + 2]);
        }
        assert_eq!(facts.key(&[3, 1]), a);
        assert_eq!(facts.key_nodes(b as usize), &[1, 3]);
        facts.seen(a, 10);
        facts.seen(a, 5);
        facts.add(a, Cell::sum(field::EVENTS, 2));
        let mut summary = Facts::new();
        let k = summary.key(&[0, 1]);
        summary.seen(k, 1);
        summary.add(k, Cell::sum(field::EVENTS, 1));
        let status = summary.text("granted");
        summary.add(
            k,
            Cell {
                field: field::CONSENT,
                rank: 0,
                at: 7,
                num: 0,
                text: status,
            },
        );
        // The summary's nodes 0 and 1 are this one's 3 and 1.
        facts.absorb(&mut summary, &[3, 1]);
        assert_eq!(facts.len(), 2 + 5_000);
        let stats = facts.stats[a as usize];
        assert_eq!((stats.first, stats.last, stats.counts[0]), (1, 10, 3));
        let mut profile = Partial::new();
        facts.merge_keys_into(&[a, b], &mut profile);
        assert_eq!(
            text_of(&facts.texts, get(&profile, field::CONSENT)),
            Some("granted")
        );
        assert_eq!(get(&profile, field::EVENTS).map(|c| c.num), Some(3));
    }
}
