//! `--shard I/N`: one of N disjoint slices of a benchmark, so N processes (a Slurm job array) cover it
//! together. Shard I takes the items at positions I, I+N, I+2N, … of the selection (after `--limit`), which
//! depends on nothing but the dataset file, and spreads hard and easy stretches of a file over all shards.
//!
//! Public operations: [`Shard`] (`FromStr` of `I/N`, `Display`), [`Shard::select`].

use std::fmt;
use std::str::FromStr;

use latentmas::error::{Error, Result};

/// Shard `index` of `count` (0-based index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The items of this shard, in their order.
    pub fn select<'a, T>(&self, items: &'a [T]) -> Vec<&'a T> {
        items.iter().skip(self.index).step_by(self.count).collect()
    }
}

impl FromStr for Shard {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidArgument(format!("--shard {s:?}: {why}"));
        let (i, n) = s.split_once('/').ok_or_else(|| bad("expected I/N, e.g. 0/4 (shard I of N, from 0)"))?;
        let index: usize = i.trim().parse().map_err(|_| bad("I is not a whole number"))?;
        let count: usize = n.trim().parse().map_err(|_| bad("N is not a whole number"))?;
        if count == 0 {
            return Err(bad("N must be at least 1"));
        }
        if index >= count {
            return Err(bad(&format!("I must be below N (shards are numbered 0 to {})", count - 1)));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_items() {
        let items: Vec<usize> = (0..10).collect();
        let mut all: Vec<usize> = (0..4)
            .flat_map(|i| Shard { index: i, count: 4 }.select(&items).into_iter().copied().collect::<Vec<_>>())
            .collect();
        assert_eq!(Shard { index: 1, count: 4 }.select(&items), [&1, &5, &9]);
        all.sort();
        assert_eq!(all, items);
        assert!(Shard { index: 3, count: 20 }.select(&items) == [&3]);
    }

    #[test]
    fn parse_refuses_nonsense() {
        assert_eq!("2/4".parse::<Shard>().ok(), Some(Shard { index: 2, count: 4 }));
        for (s, why) in [("4/4", "below N"), ("0/0", "at least 1"), ("x/4", "I is not"), ("1", "expected I/N")] {
            let e = s.parse::<Shard>().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
