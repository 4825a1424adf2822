//! Writes a random model with the exact 90-degree structure of a trained one, in the weights format:
//! `cargo run --release --example write_random_weights -- OUT.safetensors [SEED]`. For tests and timings that do
//! not depend on what the model learned.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args.first().map(String::as_str).unwrap_or("random.safetensors");
    let seed = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1);
    let weights = strek::Weights::random(&strek::ModelConfig::default_s_trek(), seed);
    std::fs::write(out, weights.to_bytes()).expect("writing the weights");
    println!("{out}: random structured model, seed {seed}");
}
