//! Where a LoRA projection's time goes, piece by piece (min over rounds):
//! `cargo run --release -p benches --example ab_lora -- N IN OUT R`.
use std::time::Instant;
use tensor::{Rng, Tensor};

fn best(f: &mut dyn FnMut()) -> f64 {
    let mut b = f64::MAX;
    for _ in 0..50 {
        let t = Instant::now();
        f();
        b = b.min(t.elapsed().as_secs_f64());
    }
    b * 1e6
}

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (n, inp, out, r) = (a[0], a[1], a[2], a[3]);
    let mut rng = Rng::new(0);
    let x = Tensor::randn([n, inp], 1.0, &mut rng);
    let base = Tensor::randn([n, out], 1.0, &mut rng);
    let la = Tensor::randn([r, inp], 0.1, &mut rng);
    let lb = Tensor::randn([out, r], 0.1, &mut rng);
    let g = Tensor::randn([n, out], 1.0, &mut rng);
    let u = x.matmul(&la.t().unwrap()).unwrap();
    println!("{n}x{inp}->{out} r{r} (µs, best of 50)");
    println!("  x·Aᵀ            {:8.1}", best(&mut || drop(x.matmul(&la.t().unwrap()).unwrap())));
    println!("  u.scale         {:8.1}", best(&mut || drop(u.scale(2.0).unwrap())));
    println!("  base.to_vec_f32 {:8.1}", best(&mut || drop(base.to_vec_f32().unwrap())));
    println!("  addmm(u, Bᵀ)    {:8.1}", best(&mut || drop(base.addmm(&u, &lb.t().unwrap(), 1.0).unwrap())));
    let mut own = Some(base.to_vec_f32().map(|v| Tensor::from_vec(v, [n, out]).unwrap()).unwrap());
    println!(
        "  addmm_into      {:8.1}",
        best(&mut || own = Some(own.take().unwrap().addmm_into(&u, &lb.t().unwrap(), 1.0).unwrap()))
    );
    println!("  g·B             {:8.1}", best(&mut || drop(g.matmul(&lb).unwrap())));
    println!("  gu·A            {:8.1}", best(&mut || drop(u.matmul(&la).unwrap())));
    println!("  guᵀ·x           {:8.1}", best(&mut || drop(u.t().unwrap().matmul(&x).unwrap())));
    println!("  gᵀ·u            {:8.1}", best(&mut || drop(g.t().unwrap().matmul(&u).unwrap())));
}
