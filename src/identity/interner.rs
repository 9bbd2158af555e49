//! Interned strings: each distinct `(kind, text)` numbered densely in order
//! of first arrival, for identifier values (the kind is the identifier
//! type) and for the text of profile facts.
//!
//! Texts live end to end in one `String` arena with an end offset each, and
//! a [`TagTable`] of numbers finds a text without a key of its own: 11 to 21
//! bytes per entry beyond the text, and no allocation per value — there are
//! millions of identifiers at scale 1,000. [`Interner::intern_from`] interns
//! a whole other interner (a file's summary) in batches whose memory is
//! loaded ahead, so the cache misses of their lookups overlap. The table
//! can be dropped once nothing more is interned, and entries can be
//! appended without it (a stored state read only to be probed).

use std::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;

use super::table::TagTable;

/// Lookups loaded ahead together by [`Interner::intern_from`].
const BATCH: usize = 32;

/// Distinct strings, numbered from 0.
#[derive(Debug, Clone)]
pub struct Interner {
    kinds: Vec<u16>,
    text: String,
    /// End of entry `i` in `text` (its start is the previous end).
    ends: Vec<u64>,
    /// Every entry by hash; `None` when dropped.
    index: Option<TagTable>,
    hasher: DefaultHashBuilder,
}

impl Default for Interner {
    fn default() -> Self {
        Interner::new()
    }
}

impl Interner {
    /// No entries, with a lookup index.
    pub fn new() -> Interner {
        Interner {
            index: Some(TagTable::new()),
            ..Interner::unindexed()
        }
    }

    /// No entries and no lookup index: entries are only [`Interner::push`]ed
    /// (a stored list read to be probed, not searched).
    pub fn unindexed() -> Interner {
        Interner {
            kinds: Vec::new(),
            text: String::new(),
            ends: Vec::new(),
            index: None,
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// [`Interner::unindexed`] with room for `entries` entries of `bytes`
    /// bytes in all.
    pub fn unindexed_with_capacity(entries: usize, bytes: usize) -> Interner {
        Interner {
            kinds: Vec::with_capacity(entries),
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(entries),
            ..Interner::unindexed()
        }
    }

    /// Bytes of all entries' texts.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The kind of entry `n`.
    pub fn kind(&self, n: u32) -> u16 {
        self.kinds[n as usize]
    }

    /// Every entry's kind, by number.
    pub fn kinds(&self) -> &[u16] {
        &self.kinds
    }

    /// The text of entry `n`.
    pub fn get(&self, n: u32) -> &str {
        stored(&self.text, &self.ends, n)
    }

    /// The hash the index files `(kind, text)` under.
    pub fn hash(&self, kind: u16, text: &str) -> u64 {
        self.hasher.hash_one((kind, text))
    }

    /// The number of `(kind, text)`, interning it if new.
    pub fn intern(&mut self, kind: u16, text: &str) -> u32 {
        let hash = self.hash(kind, text);
        self.intern_hashed(hash, kind, text)
    }

    /// [`Interner::intern`] with `hash` = [`Interner::hash`]`(kind, text)`
    /// of an interner built with the same hasher ([`Interner::sibling`]).
    pub fn intern_hashed(&mut self, hash: u64, kind: u16, text: &str) -> u32 {
        if let Some(n) = self.lookup(hash, kind, text) {
            return n;
        }
        let n = self.push(kind, text);
        if let Some(index) = &mut self.index {
            index.insert(hash, n);
        }
        n
    }

    /// Intern every entry of `other` (`hashes[n]` the hash of its entry
    /// `n`, from a [`Interner::sibling`]), `out[n]` its number here.
    ///
    /// The lookups go by batches: the table slots, then the arena entries
    /// they point at, are read for the whole batch first, so that the
    /// cache misses of a batch overlap; then each entry is interned, from
    /// the cache.
    pub fn intern_from(&mut self, other: &Interner, hashes: &[u64], out: &mut Vec<u32>) {
        out.clear();
        out.reserve(other.len());
        if let Some(index) = &mut self.index {
            index.reserve(other.len());
        }
        for (batch, hashes) in hashes[..other.len()].chunks(BATCH).enumerate() {
            self.load_ahead(hashes);
            for (i, &hash) in hashes.iter().enumerate() {
                let n = batch * BATCH + i;
                let (kind, text) = (other.kinds[n], other.get(n as u32));
                out.push(self.intern_hashed(hash, kind, text));
            }
        }
    }

    /// Read what the lookups of `hashes` will read: their home slots, then
    /// the kind, end and first text byte of their candidates.
    fn load_ahead(&self, hashes: &[u64]) {
        let Some(index) = &self.index else { return };
        let mut sink = 0u64;
        for &hash in hashes {
            sink ^= index.touch(hash);
        }
        let mut found = [u32::MAX; BATCH];
        for (f, &hash) in found.iter_mut().zip(hashes) {
            if let Some(n) = index.candidate(hash) {
                *f = n;
                sink ^= self.ends[n as usize] ^ u64::from(self.kinds[n as usize]);
            }
        }
        for n in found.into_iter().filter(|&n| n != u32::MAX) {
            let start = self.start(n);
            sink ^= u64::from(self.text.as_bytes().get(start).copied().unwrap_or(0));
        }
        std::hint::black_box(sink);
    }

    fn start(&self, n: u32) -> usize {
        match n {
            0 => 0,
            _ => self.ends[n as usize - 1] as usize,
        }
    }

    /// Append an entry without looking it up or indexing it (the caller
    /// knows it is new).
    pub fn push(&mut self, kind: u16, text: &str) -> u32 {
        let n = self.kinds.len() as u32;
        self.kinds.push(kind);
        self.text.push_str(text);
        self.ends.push(self.text.len() as u64);
        n
    }

    fn lookup(&self, hash: u64, kind: u16, text: &str) -> Option<u32> {
        self.index.as_ref()?.find(hash, |n| {
            self.kinds[n as usize] == kind && self.get(n) == text
        })
    }

    /// The number of `(kind, text)`, if interned (and the index is kept).
    pub fn find(&self, kind: u16, text: &str) -> Option<u32> {
        self.lookup(self.hash(kind, text), kind, text)
    }

    /// An empty interner hashing as this one does, so hashes computed by
    /// one are valid in the other ([`Interner::intern_hashed`]).
    pub fn sibling(&self) -> Interner {
        Interner {
            hasher: self.hasher.clone(),
            ..Interner::new()
        }
    }

    /// Free the lookup index (entries stay): nothing is found or interned
    /// by lookup afterwards.
    pub fn drop_index(&mut self) {
        self.index = None;
    }

    /// Forget every entry, keeping the allocated capacity (and the index,
    /// if kept).
    pub fn clear(&mut self) {
        self.kinds.clear();
        self.text.clear();
        self.ends.clear();
        if let Some(index) = &mut self.index {
            index.clear();
        }
    }
}

/// Entry `n` of an arena with ends `ends`.
fn stored<'a>(text: &'a str, ends: &[u64], n: u32) -> &'a str {
    let end = ends[n as usize] as usize;
    let start = match n {
        0 => 0,
        _ => ends[n as usize - 1] as usize,
    };
    &text[start..end]
}

/// Lookups in an interner of texts it mostly does not hold (the stored
/// identifiers probed for the few new ones): one bit per hash bucket, in a
/// table small enough for the cache, answers "not there" for most of them
/// before the interner's own table is read.
pub struct Probe<'a> {
    of: &'a Interner,
    bits: Vec<u64>,
    shift: u32,
}

impl Interner {
    /// A [`Probe`] of these entries.
    pub fn probe(&self) -> Probe<'_> {
        // About 16 bits per entry, two per entry: under 2 % of misses pass
        // the filter (6 % with one bit, each a lookup in the index).
        let buckets = (self.len() * 16).next_power_of_two().max(64);
        let mut probe = Probe {
            of: self,
            bits: vec![0; buckets / 64],
            shift: 64 - buckets.trailing_zeros(),
        };
        for n in 0..self.len() as u32 {
            for bucket in probe.buckets(self.hash(self.kind(n), self.get(n))) {
                probe.bits[bucket / 64] |= 1 << (bucket % 64);
            }
        }
        probe
    }
}

impl Probe<'_> {
    /// The two bits of `hash`: from its highest bits and its lowest.
    fn buckets(&self, hash: u64) -> [usize; 2] {
        let mask = (1u64 << (64 - self.shift)) - 1;
        [(hash >> self.shift) as usize, (hash & mask) as usize]
    }

    fn has(&self, bucket: usize) -> bool {
        self.bits[bucket / 64] & (1 << (bucket % 64)) != 0
    }

    /// The number of `(kind, text)`, if the interner holds it.
    pub fn find(&self, kind: u16, text: &str) -> Option<u32> {
        let hash = self.of.hash(kind, text);
        let [a, b] = self.buckets(hash);
        match self.has(a) && self.has(b) {
            false => None,
            true => self.of.lookup(hash, kind, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_numbers_each_distinct_kind_and_text_once() {
        let mut i = Interner::new();
        let a = i.intern(0, "jane@x.com");
        let b = i.intern(1, "jane@x.com");
        let c = i.intern(0, "");
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(i.intern(0, "jane@x.com"), a);
        assert_eq!(i.find(1, "jane@x.com"), Some(b));
        assert_eq!(i.find(2, "jane@x.com"), None);
        assert_eq!((i.get(a), i.kind(b), i.get(c)), ("jane@x.com", 1, ""));
        // Many entries force the index to grow and rehash from the arena.
        for n in 0..10_000 {
            i.intern(3, &format!("v{n}"));
        }
        assert_eq!(i.find(3, "v9999"), Some(10_002));
        assert_eq!(i.find(0, "jane@x.com"), Some(a));
        let mut sibling = i.sibling();
        let h = i.hash(3, "v5");
        assert_eq!(sibling.intern_hashed(h, 3, "v5"), 0);
        assert_eq!(sibling.find(3, "v5"), Some(0));
        i.clear();
        assert!(i.is_empty());
        assert_eq!(i.find(0, "jane@x.com"), None);
    }

    #[test]
    fn a_probe_finds_every_entry_and_nothing_else() {
        let mut i = Interner::new();
        for n in 0..1_000 {
            i.intern((n % 3) as u16, &format!("id-{n}"));
        }
        let probe = i.probe();
        for n in 0..1_000u32 {
            assert_eq!(probe.find((n % 3) as u16, &format!("id-{n}")), Some(n));
            // The same text of another kind, and texts never interned.
            assert_eq!(probe.find((n % 3 + 1) as u16, &format!("id-{n}")), None);
            assert_eq!(probe.find(0, &format!("other-{n}")), None);
        }
        assert_eq!(Interner::new().probe().find(0, "x"), None);
    }
}
