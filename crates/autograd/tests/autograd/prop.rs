//! Property tests: gradcheck on shapes proptest draws (ranks 1–3, sizes 1–4, random broadcast
//! patterns, random reduction dims), complementing the seeded loops.

use crate::common::{check, randn, uniform};
use proptest::prelude::*;
use tensor::Rng;

fn shape_and_partner() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, u64)> {
    (prop::collection::vec(1usize..5, 1..4), prop::collection::vec(any::<bool>(), 3), 0usize..2, any::<u64>()).prop_map(
        |(shape, ones, drop_lead, seed)| {
            let mut other: Vec<usize> = shape.iter().zip(&ones).map(|(&d, &one)| if one { 1 } else { d }).collect();
            let drop = drop_lead.min(other.len() - 1);
            other.drain(..drop);
            (shape, other, seed)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn binary_broadcast((shape, other, seed) in shape_and_partner(), op in 0usize..4) {
        let mut rng = Rng::new(seed);
        let a = randn(&shape, &mut rng);
        let b = if op == 3 { uniform(&other, 0.5, 2.0, &mut rng) } else { randn(&other, &mut rng) };
        let case = format!("op {op} {shape:?} with {other:?}");
        check(&case, |v| match op {
            0 => v[0].add(&v[1]),
            1 => v[1].sub(&v[0]),
            2 => v[0].mul(&v[1]),
            _ => v[0].div(&v[1]),
        }, &[a, b]);
    }

    #[test]
    fn matmul_broadcast(batch in 1usize..3, m in 1usize..5, k in 1usize..5, n in 1usize..5,
                        pattern in 0usize..4, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (sa, sb): (Vec<usize>, Vec<usize>) = match pattern {
            0 => (vec![m, k], vec![k, n]),
            1 => (vec![batch, m, k], vec![k, n]),
            2 => (vec![m, k], vec![batch, k, n]),
            _ => (vec![batch, 1, m, k], vec![1, 2, k, n]),
        };
        let (a, b) = (randn(&sa, &mut rng), randn(&sb, &mut rng));
        check(&format!("matmul {sa:?} x {sb:?}"), |v| v[0].matmul(&v[1]), &[a, b]);
    }

    #[test]
    fn reduce_random_dim(shape in prop::collection::vec(1usize..5, 1..4), pick in any::<usize>(),
                         keepdim in any::<bool>(), mean in any::<bool>(), seed in any::<u64>()) {
        let dim = pick % shape.len();
        let x = randn(&shape, &mut Rng::new(seed));
        let case = format!("{} {shape:?} dim {dim} keepdim {keepdim}", if mean { "mean" } else { "sum" });
        check(&case, |v| {
            let r = if mean { v[0].mean(dim, keepdim)? } else { v[0].sum(dim, keepdim)? };
            r.sqr()
        }, &[x]);
    }
}
