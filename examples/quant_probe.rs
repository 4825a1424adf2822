//! The measurement behind issue 16's note on compact descriptors: the share of the CPU matcher's mutual matches kept
//! when descriptors are stored as int8 (`round(v * 127) / 127`) or f16, over every pair of a folder of npz feature
//! files (`strek extract FRAMES -o DIR`).
//!
//! `cargo run --release --example quant_probe -- DIR`
use strek::cpu::matching::mutual_nearest;
use strek::Features;

fn quantized(f: &Features, q: impl Fn(f32) -> f32) -> Features {
    Features { descriptors: f.descriptors.iter().map(|&v| q(v)).collect(), ..f.clone() }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "npz")).collect();
    paths.sort();
    let feats: Vec<Features> = paths.iter().map(|p| Features::read_npz(p).unwrap()).collect();
    let int8 = |v: f32| (v * 127.0).round().clamp(-127.0, 127.0) / 127.0;
    let f16 = |v: f32| half::f16::from_f32(v).to_f32();
    let (mut total, mut kept8, mut kept16, mut n8, mut n16) = (0, 0, 0, 0, 0);
    for i in 0..feats.len() {
        for j in i + 1..feats.len() {
            let base = mutual_nearest(&feats[i], &feats[j], 1.0);
            let m8 = mutual_nearest(&quantized(&feats[i], int8), &quantized(&feats[j], int8), 1.0);
            let m16 = mutual_nearest(&quantized(&feats[i], f16), &quantized(&feats[j], f16), 1.0);
            total += base.len();
            kept8 += m8.iter().filter(|m| base.contains(m)).count();
            kept16 += m16.iter().filter(|m| base.contains(m)).count();
            n8 += m8.len();
            n16 += m16.len();
        }
    }
    println!("{} images, {} pairs, {total} mutual matches in f32", feats.len(), feats.len() * (feats.len() - 1) / 2);
    println!("int8: {n8} matches, {kept8} of the f32 ones kept ({:.2} %)", 100.0 * kept8 as f64 / total as f64);
    println!("f16:  {n16} matches, {kept16} of the f32 ones kept ({:.2} %)", 100.0 * kept16 as f64 / total as f64);
}
