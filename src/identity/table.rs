//! The hash index under the interners of a refresh: identifier values
//! ([`super::interner::Interner`]) and row keys ([`super::facts::Facts`]).
//!
//! Both number their entries densely and keep them in arenas of their
//! own; the index only maps a hash to candidate entry numbers, confirmed
//! by the caller against its arena. Each slot is one `u64`: the top 32
//! bits of the entry's hash and its number, in an open-addressing table
//! with linear probing whose home slot is taken from the top bits of the
//! hash. So a slot's tag is all it takes to move it when the table grows
//! (no entry is hashed again), a probe reads one cache line in the common
//! case, and an entry costs 11 to 21 bytes (a `hashbrown` table of the
//! same entries with their arena offsets: 19 to 39). Merging a file's
//! summary looks up millions of values in tables far larger than the
//! caches: [`TagTable::touch`] and [`TagTable::candidate`] let a caller
//! load the memory of a batch of lookups first, so that their cache misses
//! overlap instead of following one another.

/// A free slot (no entry has number `u32::MAX`).
const EMPTY: u64 = u64::MAX;

/// Entries are at most three quarters of the slots.
const fn full(slots: usize) -> usize {
    slots / 4 * 3
}

/// Hash → entry numbers, confirmed by the caller.
#[derive(Debug, Clone, Default)]
pub(super) struct TagTable {
    slots: Vec<u64>,
    /// log2 of the number of slots (0 when there are none).
    bits: u32,
    len: usize,
}

impl TagTable {
    pub(super) fn new() -> TagTable {
        TagTable::default()
    }

    fn home(&self, hash: u64) -> usize {
        match self.bits {
            0 => 0,
            bits => (hash >> (64 - bits)) as usize,
        }
    }

    fn tag(hash: u64) -> u64 {
        hash >> 32
    }

    /// The entry filed under `hash` for which `eq` holds.
    pub(super) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let (tag, mask) = (TagTable::tag(hash), self.slots.len() - 1);
        let mut i = self.home(hash);
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return None;
            }
            if slot >> 32 == tag && eq(slot as u32) {
                return Some(slot as u32);
            }
            i = (i + 1) & mask;
        }
    }

    /// File entry `number` under `hash`; the caller knows no equal entry
    /// is filed.
    pub(super) fn insert(&mut self, hash: u64, number: u32) {
        debug_assert!(number != u32::MAX, "entry numbers stop below u32::MAX");
        self.reserve(1);
        place(
            &mut self.slots,
            self.bits,
            (TagTable::tag(hash) << 32) | u64::from(number),
        );
        self.len += 1;
    }

    /// Make room for `more` entries without growing on the way.
    pub(super) fn reserve(&mut self, more: usize) {
        let wanted = self.len + more;
        if wanted <= full(self.slots.len()) {
            return;
        }
        let mut bits = self.bits.max(4);
        while full(1 << bits) < wanted {
            bits += 1;
        }
        // Homes come from the top `bits` bits of the 32-bit tag.
        assert!(bits <= 32, "hash index beyond 2^32 slots");
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; 1 << bits]);
        self.bits = bits;
        for slot in old.into_iter().filter(|&s| s != EMPTY) {
            place(&mut self.slots, bits, slot);
        }
    }

    /// Number of entries filed.
    pub(super) fn entries(&self) -> usize {
        self.len
    }

    /// Forget every entry. The slots are kept unless far more than the
    /// entries just forgotten needed: a table reused for one small file
    /// after a large one would otherwise cost the large one's clearing
    /// every time (a worker's files come largest first).
    pub(super) fn clear(&mut self) {
        let mut bits = 4;
        while full(1 << bits) < self.len {
            bits += 1;
        }
        if self.bits > bits + 2 {
            self.slots = vec![EMPTY; 1 << bits];
            self.bits = bits;
        } else {
            self.slots.fill(EMPTY);
        }
        self.len = 0;
    }

    /// Read the home slot of `hash` (the value is meaningless: it is for a
    /// caller loading the memory of many lookups at once).
    pub(super) fn touch(&self, hash: u64) -> u64 {
        match self.slots.is_empty() {
            true => 0,
            false => self.slots[self.home(hash)],
        }
    }

    /// The first entry filed under `hash`'s tag, unconfirmed: most likely
    /// the only one, to be loaded ahead of [`TagTable::find`].
    pub(super) fn candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }
}

/// Put `slot` in the first free slot from its home.
fn place(slots: &mut [u64], bits: u32, slot: u64) {
    let mask = slots.len() - 1;
    let mut i = ((slot >> 32) >> (32 - bits)) as usize;
    while slots[i] != EMPTY {
        i = (i + 1) & mask;
    }
    slots[i] = slot;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_by_hash_and_confirmation_across_growth() {
        let mut t = TagTable::new();
        assert_eq!(t.find(7, |_| true), None);
        assert_eq!((t.touch(7), t.candidate(7)), (0, None));
        // Entries 0..10_000; entries 2k and 2k + 1 share a hash.
        let hash = |n: u32| u64::from(n / 2 * 2).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for n in 0..10_000 {
            t.insert(hash(n), n);
        }
        assert_eq!(t.len, 10_000);
        for n in 0..10_000 {
            assert_eq!(t.find(hash(n), |m| m == n), Some(n));
            assert!(matches!(t.candidate(hash(n)), Some(m) if m / 2 == n / 2));
        }
        // Another tag finds nothing, even with a confirmation that takes
        // anything: the tag filters before the caller is asked.
        assert_eq!(t.find(hash(1) ^ (1 << 40), |_| true), None);
        // Entries whose hashes share the same home and tag probe past each
        // other; the table wraps around at its end.
        let mut t = TagTable::new();
        for n in 0..20 {
            t.insert(u64::MAX, n);
        }
        for n in 0..20 {
            assert_eq!(t.find(u64::MAX, |m| m == n), Some(n));
        }
        t.clear();
        assert_eq!((t.len, t.find(u64::MAX, |_| true)), (0, None));
    }

    #[test]
    fn a_table_cleared_after_little_use_shrinks_and_keeps_working() {
        let hash = |n: u32| u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut t = TagTable::new();
        t.reserve(100_000);
        let large = t.slots.len();
        t.insert(hash(1), 1);
        t.clear();
        assert!(t.slots.len() * 64 <= large, "{} slots", t.slots.len());
        for n in 0..1_000 {
            t.insert(hash(n), n);
        }
        assert!((0..1_000).all(|n| t.find(hash(n), |m| m == n) == Some(n)));
        // Cleared after a use of its size, it keeps its slots.
        let used = t.slots.len();
        t.clear();
        assert_eq!((t.slots.len(), t.find(hash(5), |_| true)), (used, None));
    }
}
