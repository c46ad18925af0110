//! Demonstrates float determinism: `nan` returns the bit patterns of NaN-producing operations and
//! of ordinary float maths, which the host must make identical on every replica.
//!
//! The output is each result's bits, little-endian, in the order computed: every f32 as 4 bytes,
//! every f64 as 8. Inputs pass through black_box so the operations run in WebAssembly rather
//! than being folded by the compiler.

use std::hint::black_box;

/// Collects results as little-endian bit patterns.
#[derive(Default)]
struct Bits(Vec<u8>);

impl Bits {
    fn f32(&mut self, value: f32) {
        self.0.extend_from_slice(&value.to_bits().to_le_bytes());
    }

    fn f64(&mut self, value: f64) {
        self.0.extend_from_slice(&value.to_bits().to_le_bytes());
    }
}

fn nan_f64(bits: &mut Bits) {
    let zero = black_box(0.0f64);
    let one = black_box(1.0f64);
    let infinity = black_box(f64::INFINITY);
    // A quiet NaN with a payload and a negative signalling NaN: what arithmetic does with their
    // payloads is where hardware differs.
    let payload = black_box(f64::from_bits(0x7ff8_0000_0000_dead));
    let signalling = black_box(f64::from_bits(0xfff0_0000_0000_0001));

    bits.f64(zero / black_box(0.0));
    bits.f64(black_box(-1.0f64).sqrt());
    bits.f64(infinity - black_box(f64::INFINITY));
    bits.f64(infinity * zero);
    bits.f64(payload + one);
    bits.f64(signalling * one);
    bits.f64(payload + signalling);
    bits.f64(-payload);
    bits.f64(payload.min(one));
    bits.f64(payload.max(one));
    bits.f64(payload.min(signalling));
    bits.f64(payload.abs());
    bits.f64(payload.copysign(-one));
    bits.f64(payload.floor());
    bits.f64(payload.trunc());
    bits.f64(signalling.sqrt());
}

fn nan_f32(bits: &mut Bits) {
    let zero = black_box(0.0f32);
    let one = black_box(1.0f32);
    let infinity = black_box(f32::INFINITY);
    let payload = black_box(f32::from_bits(0x7fc0_beef));
    let signalling = black_box(f32::from_bits(0xff80_0001));

    bits.f32(zero / black_box(0.0));
    bits.f32(black_box(-1.0f32).sqrt());
    bits.f32(infinity - black_box(f32::INFINITY));
    bits.f32(infinity * zero);
    bits.f32(payload + one);
    bits.f32(signalling * one);
    bits.f32(payload + signalling);
    bits.f32(payload.min(one));
    bits.f32(payload.max(one));
    bits.f32(payload.min(signalling));
    bits.f32(signalling.sqrt());
}

/// NaN payloads across precision changes: promotion and demotion may keep, truncate or replace
/// them.
fn nan_conversions(bits: &mut Bits) {
    let payload32 = black_box(f32::from_bits(0x7fa0_0001));
    let payload64 = black_box(f64::from_bits(0x7ff4_0000_dead_beef));
    bits.f64(payload32 as f64);
    bits.f32(payload64 as f32);
    bits.f32((payload32 as f64 + black_box(1.0)) as f32);
    bits.f64((payload64 as f32) as f64);
}

/// Ordinary maths, series summed term by term (no fused multiply-add, no libm), whose rounding
/// must still agree everywhere.
fn ordinary(bits: &mut Bits) {
    let x = black_box(0.7f64);
    // sin x by its Taylor series.
    let (mut term, mut sine) = (x, 0.0f64);
    for n in 0..12 {
        sine += term;
        let k = (2 * n + 2) as f64;
        term = -term * x * x / (k * (k + 1.0));
    }
    bits.f64(sine);

    // e^x and the harmonic sum.
    let (mut term, mut exp, mut harmonic) = (1.0f64, 0.0f64, 0.0f64);
    for n in 1..40 {
        exp += term;
        term *= x / n as f64;
        harmonic += 1.0 / n as f64;
    }
    bits.f64(exp);
    bits.f64(harmonic);

    let y = black_box(1.1f32);
    let mut product = 1.0f32;
    for _ in 0..100 {
        product *= y;
    }
    bits.f32(product);
    bits.f32(black_box(2.0f32).sqrt());
    bits.f64(black_box(2.0f64).sqrt());
    bits.f64(black_box(1e308f64) * black_box(10.0));
    bits.f64(black_box(5e-324f64) / black_box(2.0));
    bits.f32(black_box(0.1f64) as f32);
    bits.0
        .extend_from_slice(&(black_box(f64::NAN) as i64).to_le_bytes());
    bits.0
        .extend_from_slice(&(black_box(1e20f64) as i32).to_le_bytes());
}

fn nan(_input: &[u8]) -> Result<Vec<u8>, String> {
    let mut bits = Bits::default();
    nan_f64(&mut bits);
    nan_f32(&mut bits);
    nan_conversions(&mut bits);
    ordinary(&mut bits);
    Ok(bits.0)
}

cairn_plugin_sdk::recipe! { "nan" => nan }
