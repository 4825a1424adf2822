//! Writes the demo's generated scene as a PNG: `cargo run --release --example write_scene -- OUT.png [W H [SEED]]`.
//! Handy as a test image that needs no file from outside the repository.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args.first().map(String::as_str).unwrap_or("scene.png");
    let num = |i: usize, default: u32| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let (w, h, seed) = (num(1, 640), num(2, 480), num(3, 1));
    let image = strek::demo::scene(w, h, seed as u64);
    let strek::image_io::Samples::U8(data) = image.samples else { unreachable!() };
    image::GrayImage::from_raw(w, h, data).expect("size matches").save(out).expect("writing the PNG");
    println!("{out}: {w}x{h}");
}
