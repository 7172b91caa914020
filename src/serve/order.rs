//! The job-wide order of packs and the resume contract of `vlmprep serve`.
//!
//! **Global order.** The plan has `P` packs. Epoch `e` visits all of them once, in an order that
//! is a function of (plan, seed, epoch) alone ([`PackOrder`]). Concatenating the epochs gives the
//! global sequence: global index `g` is pack `order_{g / P}[g % P]`.
//!
//! **Job cursor.** What the job has not consumed yet is described by a [`Cursor`]: a sorted list
//! of global indices left behind (`pending`, the holes) followed by every index from `next` on.
//! Its virtual sequence is `V = pending ++ [next, next + 1, ...]`. A fresh job is
//! `Cursor { pending: [], next: 0 }`.
//!
//! **Ranks.** With `W` ranks on a cursor, rank `r` consumes `V[r]`, `V[r + W]`, `V[r + 2W]`, ...
//! (its position `j` is `V[r + jW]`), up to the job's last global index. Each rank's checkpoint
//! ([`RankState`]) carries the cursor, `W`, `r` and how many positions it consumed.
//!
//! **Resume (elastic).** Given the checkpoints of *all* `W` ranks (taken at any points, not
//! necessarily the same step), [`resume_cursor`] computes the new job cursor: every index of `V`
//! consumed by some rank is done; every other index below the highest one consumed becomes a
//! hole (`pending`), and the rest continues. Any number `W'` of ranks then strides over the new
//! cursor. No pack is delivered twice or skipped across the job, whatever `W` and `W'`: the
//! consumed set and the new virtual sequence partition the global sequence (tested below).
//! When every rank checkpoints after the same number of steps (the usual synchronous trainer)
//! there are no holes and the new cursor is `next = old_next + W·steps`.

use crate::error::{Error, Result};
use crate::pack::rng::{SplitMix64, shuffle};

/// The per-epoch order of a plan's packs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackOrder {
    /// Packs in the plan (`P`).
    pub packs: u64,
    /// Seed of the per-epoch shuffles.
    pub seed: u64,
    /// Shuffle each epoch (otherwise every epoch is plan order).
    pub shuffle: bool,
    /// Packs kept together when shuffling: the plan's balanced step size (`--balance-world`),
    /// so that steps of alike compute stay steps; 1 otherwise.
    pub block: u64,
}

impl PackOrder {
    /// Pack ids of epoch `epoch`, in the order they are visited.
    pub fn epoch(&self, epoch: u64) -> Vec<u64> {
        let block = self.block.max(1);
        let full = self.packs / block;
        let mut blocks: Vec<u64> = (0..full).collect();
        if self.shuffle {
            // One stream per (seed, epoch); mixing both through splitmix keeps nearby seeds and
            // epochs from sharing a stream.
            let mut mix = SplitMix64::new(self.seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407));
            shuffle(&mut blocks, mix.next_u64());
        }
        let mut order: Vec<u64> = blocks
            .into_iter()
            .flat_map(|b| b * block..(b + 1) * block)
            .collect();
        // A last partial block stays last, so the full ones keep their alignment to steps.
        order.extend(full * block..self.packs);
        order
    }
}

/// The job's unconsumed global indices: `pending` (sorted) then every index from `next` on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// Global indices left behind by an uneven checkpoint, in order (all below `next`).
    pub pending: Vec<u64>,
    /// First global index of the unbroken tail.
    pub next: u64,
}

impl Cursor {
    /// `V[i]`: the global index at virtual position `i`.
    pub fn at(&self, i: u64) -> u64 {
        match self.pending.get(i as usize) {
            Some(&g) => g,
            None => self.next + (i - self.pending.len() as u64),
        }
    }
}

/// One rank's stream: `V[rank + j·world]` for j = 0, 1, ... while below `end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankStream {
    pub cursor: Cursor,
    pub rank: u64,
    pub world: u64,
    /// One past the last global index of the job (`epochs × P`); `None`: endless.
    pub end: Option<u64>,
}

impl RankStream {
    /// A rank's stream; `rank < world` and `world > 0` are checked.
    pub fn new(cursor: Cursor, rank: u64, world: u64, end: Option<u64>) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(Error::Serve(format!(
                "rank {rank} of world size {world}: need 0 <= rank < world"
            )));
        }
        Ok(Self {
            cursor,
            rank,
            world,
            end,
        })
    }

    /// The global index at this rank's position `j`, or `None` past the job's end.
    pub fn global(&self, j: u64) -> Option<u64> {
        let g = self.cursor.at(self.rank + j * self.world);
        match self.end {
            Some(end) if g >= end => None,
            _ => Some(g),
        }
    }
}

/// What one rank's client checkpoints (`state_dict()`), and what `--resume` reads (a JSON list
/// of the states of all ranks of the job).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RankState {
    /// Format version (1).
    pub version: u32,
    /// Identity of the plan and order settings; resuming under another is refused.
    pub fingerprint: String,
    /// The job cursor this rank's stream strides over.
    pub cursor: Cursor,
    pub rank: u64,
    pub world: u64,
    /// Positions of its stream consumed (batches handed to the trainer, empty packs included).
    pub consumed: u64,
}

/// The job cursor after the checkpoints `states` of every rank of one job (see the module docs).
pub fn resume_cursor(states: &[RankState]) -> Result<Cursor> {
    let first = states
        .first()
        .ok_or_else(|| Error::Serve("resume state lists no rank".into()))?;
    let world = first.world;
    if world == 0 {
        return Err(Error::Serve("resume state has world size 0".into()));
    }
    let mut consumed: Vec<Option<u64>> = vec![None; world as usize];
    for s in states {
        if s.world != world || s.cursor != first.cursor || s.fingerprint != first.fingerprint {
            return Err(Error::Serve(format!(
                "resume state of rank {} belongs to another job than rank {}'s (world, cursor \
                 or plan differ)",
                s.rank, first.rank
            )));
        }
        let slot = consumed
            .get_mut(s.rank as usize)
            .ok_or_else(|| Error::Serve(format!("rank {} >= world {world}", s.rank)))?;
        if slot.replace(s.consumed).is_some() {
            return Err(Error::Serve(format!("rank {} appears twice", s.rank)));
        }
    }
    let counts: Vec<u64> = consumed
        .iter()
        .enumerate()
        .map(|(r, c)| {
            c.ok_or_else(|| {
                Error::Serve(format!(
                    "resume state lacks rank {r} of {world}: every rank's state is needed to \
                     know what the job consumed"
                ))
            })
        })
        .collect::<Result<_>>()?;
    let old = &first.cursor;
    // Virtual positions consumed: r + jW for j < counts[r]. `m` is one past the highest.
    let m = counts
        .iter()
        .enumerate()
        .filter(|&(_, &k)| k > 0)
        .map(|(r, &k)| r as u64 + (k - 1) * world + 1)
        .max()
        .unwrap_or(0);
    let done = |i: u64| counts[(i % world) as usize] > i / world;
    let mut pending: Vec<u64> = (0..m).filter(|&i| !done(i)).map(|i| old.at(i)).collect();
    let held = old.pending.len() as u64;
    if m < held {
        pending.extend_from_slice(&old.pending[m as usize..]);
    }
    let next = old.next + m.saturating_sub(held);
    Ok(Cursor { pending, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn state(cursor: &Cursor, rank: u64, world: u64, consumed: u64) -> RankState {
        RankState {
            version: 1,
            fingerprint: "f".into(),
            cursor: cursor.clone(),
            rank,
            world,
            consumed,
        }
    }

    /// What each rank consumes: the first `counts[r]` positions of its stream.
    fn consume(cursor: &Cursor, counts: &[u64], end: u64) -> Vec<u64> {
        let world = counts.len() as u64;
        let mut out = Vec::new();
        for (r, &k) in counts.iter().enumerate() {
            let s = RankStream::new(cursor.clone(), r as u64, world, Some(end)).unwrap();
            out.extend((0..k).map_while(|j| s.global(j)));
        }
        out
    }

    #[test]
    fn epochs_are_seeded_permutations_that_differ() {
        let o = PackOrder {
            packs: 50,
            seed: 3,
            shuffle: true,
            block: 1,
        };
        let (e0, e1) = (o.epoch(0), o.epoch(1));
        assert_eq!(e0, o.clone().epoch(0));
        assert_ne!(e0, e1);
        let mut s = e0.clone();
        s.sort_unstable();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        let other = PackOrder {
            seed: 4,
            ..o.clone()
        };
        assert_ne!(other.epoch(0), e0);
        let plain = PackOrder {
            shuffle: false,
            ..o
        };
        assert_eq!(plain.epoch(5), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn blocks_stay_together_and_the_partial_block_stays_last() {
        let o = PackOrder {
            packs: 11,
            seed: 9,
            shuffle: true,
            block: 3,
        };
        let e = o.epoch(2);
        for step in e[..9].chunks(3) {
            assert_eq!(step[0] % 3, 0);
            assert_eq!(step, [step[0], step[0] + 1, step[0] + 2]);
        }
        assert_eq!(&e[9..], &[9, 10]);
    }

    #[test]
    fn ranks_stride_over_the_cursor() {
        let c = Cursor::default();
        let s = RankStream::new(c, 1, 3, Some(10)).unwrap();
        let got: Vec<u64> = (0..5).map_while(|j| s.global(j)).collect();
        assert_eq!(got, vec![1, 4, 7]);
        assert!(RankStream::new(Cursor::default(), 3, 3, None).is_err());
    }

    #[test]
    fn synchronous_checkpoint_leaves_no_holes() {
        let c = Cursor::default();
        let states: Vec<RankState> = (0..4).map(|r| state(&c, r, 4, 5)).collect();
        assert_eq!(
            resume_cursor(&states).unwrap(),
            Cursor {
                pending: vec![],
                next: 20
            }
        );
    }

    #[test]
    fn resume_needs_every_rank_once_and_one_job() {
        let c = Cursor::default();
        assert!(resume_cursor(&[state(&c, 0, 2, 1)]).is_err());
        assert!(resume_cursor(&[state(&c, 0, 2, 1), state(&c, 0, 2, 1)]).is_err());
        let mut other = state(&c, 1, 2, 1);
        other.fingerprint = "g".into();
        assert!(resume_cursor(&[state(&c, 0, 2, 1), other]).is_err());
        assert!(resume_cursor(&[]).is_err());
    }

    /// Over chains of uneven checkpoints and changing world sizes, every global index below the
    /// end is consumed exactly once.
    #[test]
    fn uneven_elastic_resumes_deliver_each_index_exactly_once() {
        let end = 200u64;
        let mut rng = SplitMix64::new(42);
        for _trial in 0..200 {
            let mut cursor = Cursor::default();
            let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
            for _segment in 0..6 {
                let world = 1 + rng.below(5) as u64;
                let counts: Vec<u64> = (0..world).map(|_| rng.below(12) as u64).collect();
                for g in consume(&cursor, &counts, end) {
                    *seen.entry(g).or_default() += 1;
                }
                let states: Vec<RankState> = counts
                    .iter()
                    .enumerate()
                    .map(|(r, &k)| state(&cursor, r as u64, world, k))
                    .collect();
                cursor = resume_cursor(&states).unwrap();
                assert!(cursor.pending.windows(2).all(|w| w[0] < w[1]));
                assert!(cursor.pending.iter().all(|&g| g < cursor.next));
            }
            // Finish the job with 3 ranks consuming everything left.
            for g in consume(&cursor, &[u64::MAX / 8; 3], end) {
                *seen.entry(g).or_default() += 1;
            }
            assert_eq!(seen.len() as u64, end, "an index was skipped");
            assert!(seen.values().all(|&n| n == 1), "an index came twice");
        }
    }
}
