//! Property tests of the packers: for random costs, limits, algorithms and oversize policies,
//! every sample is placed exactly once (or dropped as its policy says), no ordinary pack is over a
//! limit, pack sums match their members, and plans are deterministic.

use proptest::prelude::*;
use vlmprep::pack::{
    Algo, Cost, Limits, OnlinePacker, OversizePolicy, PackList, PackPlan, Placement, plan_packs,
};

fn algo() -> impl Strategy<Value = Algo> {
    prop_oneof![
        Just(Algo::Bfd),
        (1usize..40).prop_map(|buffer| Algo::Online { buffer }),
        Just(Algo::Ordered),
    ]
}

fn policy() -> impl Strategy<Value = OversizePolicy> {
    prop_oneof![
        Just(OversizePolicy::Drop),
        Just(OversizePolicy::Truncate),
        Just(OversizePolicy::Alone),
    ]
}

fn limits() -> impl Strategy<Value = Limits> {
    (1u32..200, prop_oneof![1u32..20, Just(u32::MAX)])
        .prop_map(|(tokens, tiles)| Limits { tokens, tiles })
}

fn costs() -> impl Strategy<Value = Vec<Cost>> {
    prop::collection::vec(
        (0u32..260, 0u32..25).prop_map(|(t, i)| Cost::new(t, i)),
        0..300,
    )
}

/// The caller's truncation: cut tokens to the limit, keep tiles (so tile-oversize stays over and
/// must be dropped); every third sample cannot be cut.
fn truncate_for(costs: &[Cost], limits: Limits) -> impl Fn(u32) -> Option<Cost> + '_ {
    move |i| {
        let c = costs[i as usize];
        (i % 3 != 0).then(|| Cost::new(c.tokens.min(limits.tokens), c.tiles))
    }
}

fn check(plan: &PackPlan, costs: &[Cost], limits: Limits, policy: OversizePolicy) {
    assert_eq!(plan.placements.len(), costs.len());
    let mut seen = vec![0u32; costs.len()];
    for (p, pack) in plan.packs.iter().enumerate() {
        assert!(!pack.samples.is_empty(), "empty pack {p}");
        assert!(
            pack.samples.windows(2).all(|w| w[0] < w[1]),
            "not ascending: {pack:?}"
        );
        let (mut tok, mut til) = (0u64, 0u64);
        for &s in pack.samples {
            let i = s as usize;
            seen[i] += 1;
            assert_eq!(plan.placements[i].pack(), Some(p as u32), "sample {i}");
            let c = plan
                .packed_cost(costs, i)
                .expect("a packed sample has a cost");
            tok += u64::from(c.tokens);
            til += u64::from(c.tiles);
        }
        assert_eq!(
            (tok, til),
            (u64::from(pack.tokens), u64::from(pack.tiles)),
            "{pack:?}"
        );
        if pack.oversize {
            assert_eq!(policy, OversizePolicy::Alone);
            assert_eq!(pack.samples.len(), 1);
            assert!(!costs[pack.samples[0] as usize].fits(limits));
        } else {
            assert!(
                pack.tokens <= limits.tokens && pack.tiles <= limits.tiles,
                "{pack:?}"
            );
        }
    }
    let trunc = truncate_for(costs, limits);
    for (i, (&c, pl)) in costs.iter().zip(&plan.placements).enumerate() {
        let expect_dropped = !c.fits(limits)
            && match policy {
                OversizePolicy::Drop => true,
                OversizePolicy::Alone => false,
                OversizePolicy::Truncate => !trunc(i as u32).is_some_and(|t| t.fits(limits)),
            };
        match pl {
            Placement::Dropped => {
                assert!(expect_dropped, "sample {i} {c:?} dropped");
                assert_eq!(seen[i], 0);
            }
            Placement::Packed { .. } => assert!(c.fits(limits) && seen[i] == 1),
            Placement::Alone { .. } => {
                assert!(policy == OversizePolicy::Alone && !c.fits(limits) && seen[i] == 1)
            }
            Placement::Truncated { cost, .. } => {
                assert!(policy == OversizePolicy::Truncate && !c.fits(limits) && seen[i] == 1);
                assert_eq!(Some(*cost), trunc(i as u32));
                assert!(cost.fits(limits));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn plans_respect_limits_and_place_everything(
        costs in costs(), limits in limits(), algo in algo(), policy in policy(), seed in any::<u64>()
    ) {
        let trunc = truncate_for(&costs, limits);
        let plan = plan_packs(&costs, limits, algo, policy, &trunc, seed).unwrap();
        check(&plan, &costs, limits, policy);
        let again = plan_packs(&costs, limits, algo, policy, &trunc, seed).unwrap();
        prop_assert_eq!(&plan, &again);
    }

    #[test]
    fn bfd_seed_changes_only_the_order(
        costs in costs(), limits in limits(), policy in policy(), a in any::<u64>(), b in any::<u64>()
    ) {
        let trunc = truncate_for(&costs, limits);
        let pa = plan_packs(&costs, limits, Algo::Bfd, policy, &trunc, a).unwrap();
        let pb = plan_packs(&costs, limits, Algo::Bfd, policy, &trunc, b).unwrap();
        let mut sa: Vec<_> = pa.packs.iter().collect();
        let mut sb: Vec<_> = pb.packs.iter().collect();
        sa.sort_by(|x, y| x.samples.cmp(y.samples));
        sb.sort_by(|x, y| x.samples.cmp(y.samples));
        prop_assert_eq!(sa, sb);
    }

    #[test]
    fn online_packer_holds_at_most_its_buffer(costs in costs(), limits in limits(), buffer in 1usize..20) {
        let mut p = OnlinePacker::new(limits, buffer).unwrap();
        let mut out = PackList::new();
        for (i, &c) in costs.iter().enumerate() {
            let before = out.len();
            let emitted = p.push(i as u32, c, &mut out);
            prop_assert_eq!(emitted, out.len() == before + 1);
            prop_assert!(p.len() < buffer);
        }
        p.finish(&mut out);
        prop_assert!(p.is_empty());
        prop_assert_eq!(out.total_members(), costs.len());
    }
}
