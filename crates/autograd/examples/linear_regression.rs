//! Fit `y = x·w + b` to noisy data with a few steps of plain SGD, printing the loss: the smallest
//! end-to-end use of the tape (leaves, ops, backward, reading gradients).
//! Run: `cargo run --release -p autograd --example linear_regression`.

use autograd::{Tape, Var};
use tensor::{Result, Rng, Tensor};

fn main() -> Result<()> {
    let mut rng = Rng::new(42);
    let (n, d) = (64, 3);
    let true_w = Tensor::from_vec(vec![2.0f32, -1.0, 0.5], [d, 1])?;
    let x = Tensor::randn([n, d], 1.0, &mut rng);
    let y = x.matmul(&true_w)?.add(&Tensor::randn([n, 1], 0.01, &mut rng))?.affine(1.0, 0.3)?;
    let (x, y) = (Var::constant(x), Var::constant(y));

    let mut w = Tensor::zeros([d, 1], tensor::DType::F32);
    let mut b = Tensor::zeros([1], tensor::DType::F32);
    let lr = 0.1;
    for step in 0..50 {
        // A fresh tape each step: the parameters become leaves, the data stays constant.
        let tape = Tape::new();
        let (wv, bv) = (tape.leaf(w.clone()), tape.leaf(b.clone()));
        let loss = x.matmul(&wv)?.add(&bv)?.sub(&y)?.sqr()?.mean_all()?;
        let grads = tape.backward(&loss)?;
        if step % 10 == 0 || step == 49 {
            println!("step {step:2}  loss {:.6}", loss.value().to_scalar()?);
        }
        let (gw, gb) = match (grads.get(&wv), grads.get(&bv)) {
            (Some(gw), Some(gb)) => (gw, gb),
            _ => return Err(tensor::Error::invalid("example", "missing gradient")),
        };
        w = w.sub(&gw.scale(lr)?)?;
        b = b.sub(&gb.scale(lr)?)?;
    }
    println!("w = {:?}, b = {:?}", w.to_vec::<f32>()?, b.to_vec::<f32>()?);
    Ok(())
}
