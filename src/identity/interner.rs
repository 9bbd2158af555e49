//! Interned strings: each distinct `(kind, text)` numbered densely in order
//! of first arrival, for identifier values (the kind is the identifier
//! type) and for the text of profile facts.
//!
//! Texts live end to end in one `String` arena with an end offset each, and
//! a hash table of numbers (each with a tag of its hash, so most probes
//! never touch the arena) finds a text without a key of its own: a dozen
//! bytes per entry beyond the text, and no allocation per value — there are
//! millions of identifiers at scale 1,000. The table can be dropped once
//! nothing more is interned, and entries can be appended without it (a
//! stored state read only to be probed).

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

/// Distinct strings, numbered from 0.
#[derive(Debug, Clone)]
pub struct Interner {
    kinds: Vec<u16>,
    text: String,
    /// End of entry `i` in `text` (its start is the previous end).
    ends: Vec<u64>,
    /// Every entry, where its text is; `None` when dropped.
    index: Option<HashTable<Slot>>,
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
            index: Some(HashTable::new()),
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
        let start = self.text.len();
        let n = self.push(kind, text);
        if let Some(index) = &mut self.index {
            let slot = Slot::new(n, kind, start, text.len());
            let (all, hasher) = (&self.text, &self.hasher);
            index.insert_unique(hash, slot, |s| s.hash(hasher, all));
        }
        n
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
        let index = self.index.as_ref()?;
        index
            .find(hash, |s| s.holds(kind, text, &self.text))
            .map(|s| s.number)
    }

    /// The number of `(kind, text)`, if interned (and the index is kept).
    pub fn find(&self, kind: u16, text: &str) -> Option<u32> {
        self.lookup(self.hash(kind, text), kind, text)
    }

    /// [`Interner::find`] with a hash from [`Interner::hash`].
    pub fn find_hashed(&self, hash: u64, kind: u16, text: &str) -> Option<u32> {
        self.lookup(hash, kind, text)
    }

    /// An empty interner hashing as this one does, so hashes computed by
    /// one are valid in the other ([`Interner::intern_hashed`]).
    pub fn sibling(&self) -> Interner {
        Interner {
            hasher: self.hasher.clone(),
            ..Interner::new()
        }
    }

    /// Make room for `entries` more entries of `bytes` text in all.
    pub fn reserve(&mut self, entries: usize, bytes: usize) {
        self.kinds.reserve(entries);
        self.ends.reserve(entries);
        self.text.reserve(bytes);
        if let Some(index) = &mut self.index {
            let (all, hasher) = (&self.text, &self.hasher);
            index.reserve(entries, |s| s.hash(hasher, all));
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

    /// Bytes of text held.
    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }
}

/// An entry as the index holds it: everything a probe compares but the
/// text itself, so a probe reads the arena only to confirm a match.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Start of the text in the arena (high 48 bits) and the kind.
    start_kind: u64,
    number: u32,
    len: u32,
}

impl Slot {
    fn new(number: u32, kind: u16, start: usize, len: usize) -> Slot {
        Slot {
            start_kind: ((start as u64) << 16) | u64::from(kind),
            number,
            len: len as u32,
        }
    }

    fn kind(&self) -> u16 {
        self.start_kind as u16
    }

    fn text<'a>(&self, all: &'a str) -> &'a str {
        let start = (self.start_kind >> 16) as usize;
        &all[start..start + self.len as usize]
    }

    fn holds(&self, kind: u16, text: &str, all: &str) -> bool {
        self.kind() == kind && self.len as usize == text.len() && self.text(all) == text
    }

    fn hash(&self, hasher: &DefaultHashBuilder, all: &str) -> u64 {
        hasher.hash_one((self.kind(), self.text(all)))
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
}
