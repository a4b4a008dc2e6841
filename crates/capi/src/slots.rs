//! Free ranges of the engine's one KV buffer, for the row API: rows take a first-fit range and give it back
//! when freed (neighbouring free ranges merge), so a freed row's space serves the next `lm_row_create`.

/// Free slot ranges `(start, len)`, sorted by start, never adjacent (adjacent ranges are merged).
#[derive(Debug)]
pub(crate) struct Slots {
    total: usize,
    free: Vec<(usize, usize)>,
}

impl Slots {
    pub(crate) fn new(total: usize) -> Self {
        Slots { total, free: if total > 0 { vec![(0, total)] } else { Vec::new() } }
    }

    pub(crate) fn total(&self) -> usize {
        self.total
    }

    pub(crate) fn free_total(&self) -> usize {
        self.free.iter().map(|r| r.1).sum()
    }

    pub(crate) fn largest_free(&self) -> usize {
        self.free.iter().map(|r| r.1).max().unwrap_or(0)
    }

    /// The start of a new range of `len` slots (first fit), or None when no free range is that long.
    pub(crate) fn take(&mut self, len: usize) -> Option<usize> {
        let i = self.free.iter().position(|r| r.1 >= len)?;
        let (start, have) = self.free[i];
        if have == len {
            self.free.remove(i);
        } else {
            self.free[i] = (start + len, have - len);
        }
        Some(start)
    }

    /// Takes the longest free range whole (the first of equals): `(start, len)`, `(0, 0)` when none is free.
    pub(crate) fn take_largest(&mut self) -> (usize, usize) {
        let Some(i) = (0..self.free.len()).rev().max_by_key(|&i| self.free[i].1) else { return (0, 0) };
        self.free.remove(i)
    }

    /// Returns a range that [`Slots::take`] gave out.
    pub(crate) fn give(&mut self, start: usize, len: usize) {
        let i = self.free.partition_point(|r| r.0 < start);
        self.free.insert(i, (start, len));
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn freed_ranges_are_reused_and_merge_with_their_neighbours() {
        let mut s = Slots::new(100);
        let a = s.take(30).unwrap();
        let b = s.take(30).unwrap();
        let c = s.take(30).unwrap();
        assert_eq!((a, b, c), (0, 30, 60));
        assert_eq!(s.take(20), None, "only 10 slots are left");
        s.give(b, 30);
        assert_eq!(s.largest_free(), 30);
        assert_eq!(s.take(20), Some(30), "the freed middle range serves the next row");
        s.give(30, 20);
        s.give(a, 30);
        s.give(c, 30);
        assert_eq!(s.free, vec![(0, 100)]);
        let a = s.take(10).unwrap();
        let b = s.take(50).unwrap();
        s.give(a, 10);
        assert_eq!(s.take_largest(), (60, 40), "of 10 at 0 and 40 at 60, the longer");
        assert_eq!(s.take_largest(), (0, 10));
        assert_eq!(s.take_largest(), (0, 0), "nothing left");
        s.give(0, 10);
        s.give(60, 40);
        s.give(b, 50);
        assert_eq!(s.free, vec![(0, 100)]);
        assert_eq!(s.free_total(), 100);
    }
}
