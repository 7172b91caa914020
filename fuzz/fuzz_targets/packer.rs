//! Fuzzes the packers: bytes decode into costs, limits, an algorithm, an oversize policy and a
//! seed. Invariants, beyond "does not panic": zero limits are refused; otherwise every sample is
//! packed once or dropped as the policy says, no ordinary pack is over a limit, pack sums equal
//! their members' costs, members are ascending, and a second run gives the same plan.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vlmprep::pack::{Algo, Cost, Limits, OversizePolicy, Placement, plan_packs};

/// Reads little-endian integers from the input, zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mode = b.u8();
    // Small limits most of the time (dense packing), full-range ones sometimes.
    let limits = if mode & 1 == 0 {
        Limits {
            tokens: u32::from(b.u16() % 600),
            tiles: match b.u8() {
                255 => u32::MAX,
                t => u32::from(t % 40),
            },
        }
    } else {
        Limits {
            tokens: b.u32(),
            tiles: b.u32(),
        }
    };
    let algo = match (mode >> 1) % 3 {
        0 => Algo::Bfd,
        1 => Algo::Online {
            buffer: usize::from(b.u8() % 64) + 1,
        },
        _ => Algo::Ordered,
    };
    let policy = match (mode >> 3) % 3 {
        0 => OversizePolicy::Drop,
        1 => OversizePolicy::Truncate,
        _ => OversizePolicy::Alone,
    };
    let seed = u64::from(b.u32());
    let wide = mode & 0x40 != 0;
    let mut costs = Vec::new();
    while !b.0.is_empty() && costs.len() < 4096 {
        costs.push(if wide {
            Cost::new(b.u32(), b.u32())
        } else {
            Cost::new(u32::from(b.u16() % 700), u32::from(b.u8() % 48))
        });
    }
    // Truncation cuts tokens only; every fifth sample cannot be cut.
    let truncated = |i: u32| {
        let c = costs[i as usize];
        (i % 5 != 0).then(|| Cost::new(c.tokens.min(limits.tokens), c.tiles))
    };

    let plan = match plan_packs(&costs, limits, algo, policy, &truncated, seed) {
        Ok(plan) => plan,
        Err(_) => {
            assert!(limits.tokens == 0 || limits.tiles == 0);
            return;
        }
    };
    assert!(limits.tokens > 0 && limits.tiles > 0);
    assert_eq!(plan.placements.len(), costs.len());
    let mut seen = vec![false; costs.len()];
    for (p, pack) in plan.packs.iter().enumerate() {
        assert!(!pack.samples.is_empty());
        assert!(pack.samples.windows(2).all(|w| w[0] < w[1]));
        let (mut tok, mut til) = (0u64, 0u64);
        for &s in pack.samples {
            let i = s as usize;
            assert!(!seen[i], "sample {i} twice");
            seen[i] = true;
            assert_eq!(plan.placements[i].pack(), Some(p as u32));
            let c = plan.packed_cost(&costs, i).unwrap();
            tok += u64::from(c.tokens);
            til += u64::from(c.tiles);
        }
        assert_eq!((tok, til), (u64::from(pack.tokens), u64::from(pack.tiles)));
        if pack.oversize {
            assert!(policy == OversizePolicy::Alone && pack.samples.len() == 1);
            assert!(!costs[pack.samples[0] as usize].fits(limits));
        } else {
            assert!(pack.tokens <= limits.tokens && pack.tiles <= limits.tiles);
        }
    }
    for (i, (&c, pl)) in costs.iter().zip(&plan.placements).enumerate() {
        let packed = seen[i];
        match pl {
            Placement::Dropped => {
                assert!(!packed && !c.fits(limits) && policy != OversizePolicy::Alone);
                if policy == OversizePolicy::Truncate {
                    assert!(!truncated(i as u32).is_some_and(|t| t.fits(limits)));
                }
            }
            Placement::Packed { .. } => assert!(packed && c.fits(limits)),
            Placement::Alone { .. } => assert!(packed && policy == OversizePolicy::Alone),
            Placement::Truncated { cost, .. } => {
                assert!(packed && policy == OversizePolicy::Truncate && !c.fits(limits));
                assert!(cost.fits(limits) && Some(*cost) == truncated(i as u32));
            }
        }
    }
    let again = plan_packs(&costs, limits, algo, policy, &truncated, seed).unwrap();
    assert_eq!(plan, again);
});
